"""The training loop of one grid point: build data, model and optimizer from the config, train, evaluate the
diversity metric on a fixed held-out set, append rows to metrics.csv, checkpoint, and keep run.json current.

Running it again in the same folder continues: a finished point is skipped, a killed one resumes from its
last checkpoint (model, optimizer, RNG and data position), so its CSV goes on without duplicated or
missing rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from bitnet.config import RunConfig, config_fingerprint
from bitnet.data import BatchSampler, Corpus, make_eval_set
from bitnet.devices import assign_device, cpu_threads
from bitnet.diagnostics import (WeightTracker, generation_prompts, generation_report, parameter_group_rms,
                                unigram_entropy)
from bitnet.loggers import start_trackers
from bitnet.probe import evaluate, measurement_facts, versions
from bitnet.quant import drop_latent_weights
from bitnet.setup_check import check_setup, report
from bitnet.records import (CHECKPOINT_FILE, COMPLETED, DIVERGED, FAILED, FINISHED_STATUSES, INTERRUPTED,
                            LAYER_COLUMNS, LAYERS_FILE, LOCK_FILE, METRIC_COLUMNS, METRICS_FILE, RUNNING, MetricsCSV,
                            RunRecord, atomic_file, deferred_signals, finished_step, point_lock, read_record,
                            remove_stale_temporaries, run_record, torn_last_line, uncomputed, write_record)

log = logging.getLogger("bitnet")


class Diverged(RuntimeError):
    def __init__(self, step: int):
        super().__init__(f"training loss became NaN or infinite at step {step}")
        self.step = step


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, or SIGINT as KeyboardInterrupt) ends the run: the point is recorded
    `interrupted` and resumes from its checkpoint on a rerun."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(err: KeyboardInterrupt) -> str:
    return signal.Signals(err.signum).name if isinstance(err, Stopped) else "SIGINT"


class DifferentConfig(ValueError):
    """The output folder holds a run of another config (which keys differ is in the message)."""


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs between two resolved configs (bitnet.records.UNCOMPUTED_KEYS
    aside)."""
    differences = []
    for key in sorted(set(old) | set(new), key=str):
        if uncomputed(f"{prefix}{key}"):
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {json.dumps(a)} there, {json.dumps(b)} now")
    return differences


def resolve_device(name: str) -> torch.device:
    """auto/cuda spread the jobs of a multirun over the visible GPUs by job number (bitnet.devices)."""
    return assign_device(name)


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA (the recipe trains in bf16 with fake quant); fp32 on CPU, where bf16 is slower
    without AMX."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class Run:
    """One grid point. `run()` trains it (or resumes it, or skips it when it already finished)."""

    def __init__(self, config: RunConfig | DictConfig, out_dir: Path, corpus: Corpus | None = None):
        """`config`: the validated RunConfig (bitnet.validate.validate_job), or a composed config to build it
        from; `corpus`: its corpus when the validation loaded it already."""
        self.config = config if isinstance(config, RunConfig) else RunConfig.from_config(config)
        self.given_corpus = corpus
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / METRICS_FILE
        self.layers_path = self.out_dir / LAYERS_FILE
        self.checkpoint_path = self.out_dir / CHECKPOINT_FILE
        self.fingerprint = self.config.fingerprint
        self.total_steps, self.last_step = self.config.train.steps, self.config.last_step
        self.eval_steps = self.config.eval_steps
        self.checkpoint_every = self.config.train.checkpoint_every
        self.step = 0

    # ---- setup -------------------------------------------------------------------------------------
    def _setup(self) -> None:
        config = self.config
        device = resolve_device(config.device)
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(config.threads))
        self.corpus = self.given_corpus or config.data.load(log=log.info)
        self.eval_set = make_eval_set(self.corpus.val_ids, config.eval.positions, config.data.seq_len)
        self.build_training(device, self.corpus.vocab_size, self.corpus.train_ids)
        self.setup_findings = report(check_setup(self.model, self.optimizer, lr=config.lr.peak,
                                                 width=config.model.hidden), log.warning)
        self.unigram_entropy = unigram_entropy(self.corpus.train_ids, self.corpus.vocab_size)
        self.weights = WeightTracker(self.model.bitlinear_layers())
        self.grad_norm = None
        generate = config.eval.generate
        self.prompts = (generation_prompts(self.corpus.val_ids, generate.prompts, generate.prompt_tokens)
                        if generate.every else None)

    def build_training(self, device: torch.device, vocab_size: int, train_ids: torch.Tensor) -> None:
        """Everything `train_step` uses: model, optimizer, schedules and the batch sampler over `train_ids`
        (`bitnet.bench` builds these alone, on random tokens)."""
        config = self.config
        self.device = device
        self.autocast = autocast_for(device, config.precision)
        torch.manual_seed(config.seed)
        self.model = config.model.build(vocab_size).to(device)
        self.counts = self.model.parameter_counts()
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = config.optim.build(self.model, device, weight_decay=config.wd(0))
        self.lr, self.wd = config.lr, config.wd
        self.sampler = BatchSampler(train_ids, config.train.batch_size, config.data.seq_len, seed=config.seed)

    def _record(self, status: str, **extra) -> dict:
        record = run_record(
            status, step=self.step, **self.config.recorded_facts, params=self.counts,
            **measurement_facts(self.eval_set, self.corpus.vocab_size, self.unigram_entropy), source="bitnet",
            corpus={"fingerprint": self.corpus.fingerprint, "train_tokens": len(self.corpus.train_ids),
                    "val_tokens": len(self.corpus.val_ids)},
            device=str(self.device), cpu_threads=torch.get_num_threads() if self.device.type == "cpu" else None,
            elapsed_s=round(self.elapsed, 2), config_fingerprint=self.fingerprint, versions=versions(),
            config=self.config.resolved, setup_findings=getattr(self, "setup_findings", None), **extra)
        write_record(self.out_dir, record)
        self.status = status
        return record.to_json()

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "elapsed": self.elapsed, "fingerprint": self.fingerprint,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "sampler": self.sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                 "loss_sum": self.loss_sum, "loss_count": self.loss_count, "codes": self.weights.state_dict()}
        # Written whole and fsynced before the rename, so a crash never leaves a torn checkpoint; a preemption
        # signal waits for it.
        with deferred_signals(), atomic_file(self.checkpoint_path, "wb") as handle:
            torch.save(state, handle)

    def _read_checkpoint(self) -> dict | None:
        """The checkpoint's state, or None when there is none. An unreadable one (a disk fault, a copy cut
        short) is set aside as checkpoint.pt.corrupt with a warning, and the point starts over, so a rerun
        always makes progress instead of failing the same way each time."""
        if not self.checkpoint_path.exists():
            return None
        try:  # on the CPU: the RNG states must stay CPU ByteTensors; the rest is copied to the device.
            # weights_only: tensors and plain containers only. A results folder is untrusted input (a shared or
            # downloaded sweep): a full unpickle would run whatever code a crafted checkpoint.pt carries.
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            missing = {"step", "fingerprint", "model", "optimizer", "sampler", "cpu_rng"} - set(state)
            if missing:
                raise KeyError(f"no {', '.join(sorted(missing))}")
        except Exception as err:  # noqa: BLE001 - whatever the damage, the file cannot be resumed from
            aside = self.checkpoint_path.with_name(f"{CHECKPOINT_FILE}.corrupt")
            os.replace(self.checkpoint_path, aside)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
            log.warning(f"The checkpoint {self.checkpoint_path} is unreadable ({type(err).__name__}: {reason}); "
                        f"set aside as {aside.name}, the point starts over from step 0")
            return None
        return state

    def _load_checkpoint(self, previous: RunRecord | None) -> bool:
        state = self._read_checkpoint()
        if state is None:
            return False
        # A checkpoint taken under an older fingerprint rule carries that rule's hash: it is this config's when
        # the run.json written with it records this config by content and that same hash.
        recorded_alike = self._same_config(previous) and state["fingerprint"] == previous.config_fingerprint
        if state["fingerprint"] != self.fingerprint and not recorded_alike:
            raise DifferentConfig(self._different_config(previous, "a checkpoint"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
        self.weights.load_state_dict(state["codes"])
        MetricsCSV.truncate_after(self.csv_path, self.step)
        MetricsCSV.truncate_after(self.layers_path, self.step)
        return True

    def _same_config(self, previous: RunRecord | None) -> bool:
        """Whether the folder's run.json records this config: its recorded config fingerprinted by today's rule
        (a run recorded before a rule change still matches by content), else its recorded fingerprint."""
        if previous is None:
            return False
        if isinstance(previous.config, dict) and previous.config:
            return config_fingerprint(previous.config) == self.fingerprint
        return previous.config_fingerprint == self.fingerprint

    def _different_config(self, previous: RunRecord | None, what: str) -> str:
        """One line: the folder, what of the other config is in it, and the keys that differ."""
        shown = ""
        if previous and isinstance(previous.config, dict) and previous.config:
            differences = config_differences(previous.config, self.config.resolved)
            more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
            shown = f" ({'; '.join(differences[:5])}{more})" if differences else ""
        return (f"{self.out_dir} holds {what} of a different config{shown}; rerun with that config to continue "
                f"it, or give another output folder")

    # ---- the loop ----------------------------------------------------------------------------------
    def _evaluation_row(self) -> dict:
        """Everything measured at an evaluation step; also appends the per-layer rows to layers.csv."""
        applied = max(self.step - 1, 0)  # the update that produced this row (step 0: the first one to come)
        loss = self.loss_sum / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        metrics = evaluate(self.model, self.eval_set, forward=partial(self.model, return_hidden=True),
                           device=self.device, autocast=self.autocast, batch_size=self.config.eval.batch_size,
                           unigram_entropy=self.unigram_entropy)
        row = {"step": self.step, "loss": loss, **metrics, "lr": self.lr(applied), "wd": self.wd(applied),
               "lr_stage": self.lr.stage(applied), "wd_stage": self.wd.stage(applied),
               "tokens_seen": self.step * self.sampler.batch_size * self.sampler.seq_len,
               "elapsed_s": round(self.elapsed, 3), "grad_norm": self.grad_norm}
        together, per_layer = self.weights.measure()
        row.update(together)
        row.update(parameter_group_rms(self.model))
        self.layers_csv.write_many({"step": self.step, **layer} for layer in per_layer)
        evaluation = self.eval_steps.number(self.step)
        generate = self.config.eval.generate
        if generate.every and evaluation % generate.every == 0:
            row.update(generation_report(self.model, self.corpus.tokenizer, self.prompts, generate, self.step,
                                         self.out_dir, self.autocast))
        return row

    def train_step(self) -> torch.Tensor:
        """One optimizer update at `self.step` (which the caller advances); also what `bitnet.bench` times."""
        train = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
            group["weight_decay"] = self.wd(self.step) if group["decays"] else 0.0
        inputs, targets = self.sampler.next_batch()
        inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.forward(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                               label_smoothing=train.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reported = self.step + 1 in self.eval_steps  # the norm is only reported on evaluation rows
        if train.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        elif reported:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if reported:
            self.grad_norm = float(norm)
        self.optimizer.step()
        if not self.model.cfg.latent_weights:
            drop_latent_weights(self.model.bitlinear_layers().values())
        return loss.detach()

    def run(self) -> dict:
        """Train the point, resume it, or skip it when it is finished or another process is training it now.

        The folder's lock (bitnet.records.point_lock) is held for the whole run, so two launches of the same
        sweep never train the same point: the second one skips it and says so."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with point_lock(self.out_dir) as held:
            if not held:
                log.info(f"Another process is training this point now (it holds {self.out_dir / LOCK_FILE}): "
                         f"skipped here; its results will be in {self.out_dir}")
                return {"status": RUNNING, "skipped": True, "busy": True}
            return self._run_locked()

    def _run_locked(self) -> dict:
        remove_stale_temporaries(self.out_dir)  # left by a process killed mid-write; nobody else writes here now
        previous = read_record(self.out_dir)
        if previous and previous.status in FINISHED_STATUSES:
            if not self._same_config(previous):
                raise DifferentConfig(self._different_config(previous, f"a {previous.status} run"))
            self._drop_torn_rows(previous)
            log.info(f"Already {previous.status} at step {finished_step(previous)}: {self.csv_path} (skipped)")
            return {**previous.to_json(), "skipped": True}

        if previous and not self._same_config(previous) and previous.config_fingerprint is not None \
                and self.checkpoint_path.exists():
            # The record says the checkpoint is another config's: refused before anything is built or loaded.
            raise DifferentConfig(self._different_config(previous, "a checkpoint"))
        try:
            self._setup()
            self.step, self.elapsed, self.loss_sum, self.loss_count = 0, 0.0, 0.0, 0
            resumed = self._load_checkpoint(previous)
            if not resumed:  # a new point, or a killed one that never checkpointed: start over
                self.csv_path.unlink(missing_ok=True)
                self.layers_path.unlink(missing_ok=True)
        except DifferentConfig:
            raise  # the folder belongs to another config: leave its record alone
        except BaseException as err:  # e.g. the data went missing, the folder is not writable: leave a record
            status = INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED
            failed = previous or run_record(status, **self.config.recorded_facts, source="bitnet")
            write_record(self.out_dir, dataclasses.replace(failed, status=status, error=f"{type(err).__name__}: {err}",
                                                           config_fingerprint=self.fingerprint,
                                                           config=self.config.resolved))
            raise
        log.info(f"Resuming from the checkpoint at step {self.step}" if resumed else
                 f"Training from step 0 in {self.out_dir}")
        if self.checkpoint_every >= self.last_step:  # eval.every beyond the run (checkpoint_every follows it)
            log.warning(f"No checkpoint will be taken: train.checkpoint_every={self.checkpoint_every} (eval.every="
                        f"{self.config.eval.every}) is not below the {self.last_step} steps that run, so a stopped run "
                        f"starts over; give eval.every a value below {self.last_step} for checkpoints")
        self._record(RUNNING)
        csv = layers_csv = None
        # logger=tensorboard/mlflow/wandb: a copy of each metrics.csv row (bitnet.loggers; never stops the run)
        self.trackers = start_trackers(self.config.logger, self.out_dir, self.config.resolved,
                                       self.step if resumed else None)
        try:
            csv = MetricsCSV(self.csv_path, METRIC_COLUMNS)
            self.layers_csv = layers_csv = MetricsCSV(self.layers_path, LAYER_COLUMNS)
            return self._loop(csv, resumed)
        except Diverged as err:
            log.warning(f"Diverged: {err}; point stopped, the sweep goes on")
            return self._record(DIVERGED, diverged_step=err.step, error=str(err))
        except KeyboardInterrupt as err:
            self._record(INTERRUPTED, error=f"stopped by {signal_name(err)}")
            raise
        except BaseException as err:
            try:
                self._record(FAILED, error=f"{type(err).__name__}: {err}")
            except OSError:  # a full disk fails this write too: run.json stays `running`; the caller says so
                pass
            raise
        finally:
            for handle in (csv, layers_csv):
                if handle is not None:
                    with contextlib.suppress(OSError):  # a full disk fails the flush of a failed row again
                        handle.close()
            self.trackers.finish(self.status)

    def _drop_torn_rows(self, previous: RunRecord) -> None:
        """A finished point's CSVs end in a complete row; a torn tail (a crash mid-write in an older version, a
        copy cut short) is cut off so that it does not stay forever."""
        for path in (self.csv_path, self.layers_path):
            if torn_last_line(path) is not None:
                kept = MetricsCSV.truncate_after(path, int(previous.step))
                log.warning(f"{path} ended in a torn row; cut it off ({kept} complete rows kept)")

    def _write_evaluation(self, csv: MetricsCSV) -> dict:
        """Measure this step's row, append it to metrics.csv and mirror it to the trackers (bitnet.loggers)."""
        row = self._evaluation_row()
        csv.write(row)
        self.trackers.log_row(row["step"], row)
        return row

    def _loop(self, csv: MetricsCSV, resumed: bool) -> dict:
        from tqdm.auto import tqdm

        if not resumed:
            self._write_evaluation(csv)
        with tqdm(total=self.last_step, initial=self.step, disable=not self.config.progress, unit="step",
                  dynamic_ncols=True, mininterval=1.0, leave=False) as bar:  # closed on any exit
            self._train(csv, bar)
        record = self._record(COMPLETED)  # then drop the checkpoint: a kill in between still leaves a finished point
        self.checkpoint_path.unlink(missing_ok=True)
        return record

    def _train(self, csv: MetricsCSV, bar) -> None:
        refresh_every = max(1, min(self.config.eval.every, 20))
        window = []
        unique = ""  # last evaluated unique_tokens, shown in the progress bar
        started = time.perf_counter() - self.elapsed
        while self.step < self.last_step:
            loss = self.train_step()
            self.step += 1
            window.append(loss)
            if len(window) == refresh_every or self.step in self.eval_steps:
                losses = torch.stack(window).double().cpu()
                window.clear()
                if not torch.isfinite(losses).all():
                    first_bad = int((~torch.isfinite(losses)).nonzero()[0])
                    raise Diverged(self.step - len(losses) + 1 + first_bad)
                self.loss_sum += float(losses.sum())
                self.loss_count += len(losses)
                bar.set_postfix(loss=f"{float(losses[-1]):.3f}", uniq=unique, refresh=False)
            bar.update(1)
            if self.step in self.eval_steps:
                self.elapsed = time.perf_counter() - started
                row = self._write_evaluation(csv)
                unique = str(row["unique_tokens"])
                if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.step < self.last_step:
                    self._save_checkpoint()
                    self._record(RUNNING)
        self.elapsed = time.perf_counter() - started
