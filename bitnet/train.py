"""The training loop of one grid point: build data, model and optimizer from the config, train, evaluate the
diversity metric on a fixed held-out set, append rows to metrics.csv, checkpoint, and keep run.json current.

Running it again in the same folder continues: a finished point is skipped, a killed one resumes from its
last checkpoint (model, optimizer, RNG and data position), so its CSV goes on without duplicated or
missing rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from bitnet import __version__
from bitnet.data import BatchSampler, EvalSet, load_corpus, make_eval_set
from bitnet.devices import assign_device, cpu_threads
from bitnet.diagnostics import (DIAGNOSTIC_COLUMNS, LAYER_COLUMNS, CosineAccumulator, WeightTracker,
                                generation_prompts, generation_report, unigram_entropy)
from bitnet.metrics import prediction_diversity
from bitnet.model import BitNetLM, ModelConfig
from bitnet.records import (COMPLETED, CORE_COLUMNS, DIVERGED, FAILED, FINISHED_STATUSES, METRICS_FILE, RUNNING,
                            MetricsCSV, deferred_signals, read_record, write_record)
from bitnet.schedules import lr_schedule, wd_schedule

log = logging.getLogger("bitnet")

CHECKPOINT_FILE = "checkpoint.pt"
LAYERS_FILE = "layers.csv"
METRIC_COLUMNS = [*CORE_COLUMNS, *DIAGNOSTIC_COLUMNS]
# Keys that change how a run is executed but not what it computes: a checkpoint stays valid across them.
EXECUTION_KEYS = ("device", "compile", "threads", "progress")


class Diverged(RuntimeError):
    def __init__(self, step: int):
        super().__init__(f"training loss became NaN or infinite at step {step}")
        self.step = step


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


def config_fingerprint(cfg: DictConfig) -> str:
    content = OmegaConf.to_container(cfg, resolve=True)
    for key in EXECUTION_KEYS:
        content.pop(key, None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def build_model(cfg: DictConfig, vocab_size: int) -> BitNetLM:
    m = cfg.model
    return BitNetLM(ModelConfig(
        vocab_size=vocab_size, hidden=int(m.hidden), layers=int(m.layers), n_heads=int(m.n_heads),
        max_seq_len=int(cfg.data.seq_len), ffn_dim=m.get("ffn_dim"), quant=m.quant, norm=m.norm, ffn=m.ffn,
        quantize_head=bool(m.quantize_head), rope_theta=float(m.rope_theta), norm_eps=float(m.norm_eps),
        init_std=float(m.init_std)))


def build_optimizer(model: torch.nn.Module, cfg: DictConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear weights, embedding, head) and none on norm gains; the
    schedule sets the decay group's weight_decay every step."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.0, "decays": True},
         {"params": no_decay, "weight_decay": 0.0, "decays": False}],
        lr=0.0, betas=tuple(cfg.optim.betas), eps=float(cfg.optim.eps),
        fused=fused or None, foreach=None if fused else True)


@torch.no_grad()
def evaluate(model: torch.nn.Module, eval_set: EvalSet, device: torch.device, autocast, batch_size: int) -> dict:
    """eval_loss, the diversity metric, hidden_cosine and softmax_entropy (mean entropy in nats of the predicted
    distribution, ln(V) when it is uniform) over the fixed held-out positions."""
    model.eval()
    mask = eval_set.mask
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    entropy_sum = torch.zeros((), device=device, dtype=torch.float64)
    predictions, cosine = [], CosineAccumulator()
    for start in range(0, len(eval_set.inputs), batch_size):
        rows = slice(start, start + batch_size)
        keep = mask[rows].to(device)
        with autocast():
            logits, hidden = model(eval_set.inputs[rows].to(device), return_hidden=True)
        logits, targets = logits.float()[keep], eval_set.targets[rows].to(device)[keep]
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        log_probs = logits.log_softmax(-1)
        entropy_sum -= (log_probs.exp() * log_probs).sum()
        predictions.append(logits.argmax(-1))
        cosine.add(hidden[keep])
    model.train()
    metrics = prediction_diversity(torch.cat(predictions), eval_set.targets[mask])
    return {"eval_loss": float(loss_sum) / eval_set.positions, **metrics, "hidden_cosine": cosine.value(),
            "softmax_entropy": float(entropy_sum) / eval_set.positions}


def evaluation_steps(total: int, every: int) -> set[int]:
    return {0, total, *range(every, total, every)}


class Run:
    """One grid point. `run()` trains it (or resumes it, or skips it when it already finished)."""

    def __init__(self, cfg: DictConfig, out_dir: Path):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.csv_path = self.out_dir / METRICS_FILE
        self.layers_path = self.out_dir / LAYERS_FILE
        self.checkpoint_path = self.out_dir / CHECKPOINT_FILE

    # ---- setup -------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        device = resolve_device(cfg.device)
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.threads))
        self.corpus = load_corpus(cfg.data.name, cfg.data.get("path"), int(cfg.data.vocab_size),
                                  float(cfg.data.val_fraction), cache_dir=cfg.data.get("cache_dir"), log=log.info)
        self.eval_set = make_eval_set(self.corpus.val_ids, int(cfg.eval.positions), int(cfg.data.seq_len))
        self.build_training(device, self.corpus.vocab_size, self.corpus.train_ids)
        self.unigram_entropy = unigram_entropy(self.corpus.train_ids, self.corpus.vocab_size)
        self.weights = WeightTracker(self.model.bitlinear_layers())
        self.grad_norm = None
        generate_cfg = cfg.eval.generate
        self.generate_every = int(generate_cfg.every or 0)
        self.prompts = generation_prompts(self.corpus.val_ids, int(generate_cfg.prompts),
                                          int(generate_cfg.prompt_tokens)) if self.generate_every else None
        self.last_step = self.total_steps
        if cfg.train.get("stage1_only"):
            switches = [s for s in (self.lr.switch, self.wd.switch) if s is not None]
            if not switches:
                raise ValueError("train.stage1_only=true needs a two_stage lr or wd schedule (nothing to stop at)")
            self.last_step = min(switches)
        self.eval_steps = evaluation_steps(self.last_step, int(cfg.eval.every))
        self.checkpoint_every = int(cfg.train.checkpoint_every or 0)

    def build_training(self, device: torch.device, vocab_size: int, train_ids: torch.Tensor) -> None:
        """Everything `train_step` uses: model, optimizer, schedules and the batch sampler over `train_ids`
        (`bitnet.bench` builds a Run from this alone, on random tokens)."""
        cfg = self.cfg
        self.device = device
        self.autocast = autocast_for(device, cfg.precision)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, vocab_size).to(device)
        self.counts = self.model.parameter_counts()
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.total_steps = int(cfg.train.steps)
        self.lr = lr_schedule(cfg.lr, self.total_steps)
        self.wd = wd_schedule(cfg.wd, self.total_steps)
        self.sampler = BatchSampler(train_ids, int(cfg.train.batch_size), int(cfg.data.seq_len), seed=int(cfg.seed))
        self.eval_steps = frozenset()
        self.step = 0

    def _record(self, status: str, **extra) -> dict:
        record = {
            "status": status, "step": self.step, "last_step": self.last_step, "total_steps": self.total_steps,
            "params": self.counts, "vocab_size": self.corpus.vocab_size, "ln_vocab": math.log(self.corpus.vocab_size),
            "unigram_entropy": self.unigram_entropy, "eval_positions": self.eval_set.positions,
            "eval_unique_targets": int(self.eval_set.targets[self.eval_set.mask].unique().numel()),
            "corpus": {"fingerprint": self.corpus.fingerprint, "train_tokens": len(self.corpus.train_ids),
                       "val_tokens": len(self.corpus.val_ids)},
            "switch_steps": {"lr": self.lr.switch, "wd": self.wd.switch},
            "device": str(self.device), "cpu_threads": torch.get_num_threads() if self.device.type == "cpu" else None,
            "elapsed_s": round(self.elapsed, 2), "config_fingerprint": self.fingerprint,
            "versions": {"bitnet": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "metrics_csv": METRICS_FILE, "config": OmegaConf.to_container(self.cfg, resolve=True), **extra}
        write_record(self.out_dir, record)
        return record

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "elapsed": self.elapsed, "fingerprint": self.fingerprint,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "sampler": self.sampler.state_dict(), "cpu_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                 "loss_sum": self.loss_sum, "loss_count": self.loss_count, "codes": self.weights.state_dict()}
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT_FILE}.tmp")
        # fsynced before the rename: a crash never leaves a torn checkpoint; a preemption signal waits for it
        with deferred_signals():
            with open(tmp, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.checkpoint_path)

    def _load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        # On the CPU: the RNG states must stay CPU ByteTensors; model and optimizer state are copied to the device.
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"{self.out_dir}: a checkpoint of a different config is here; resume with the same "
                             f"config or use another output folder")
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

    # ---- the loop ----------------------------------------------------------------------------------
    def _evaluation_row(self) -> dict:
        """Everything measured at an evaluation step; also appends the per-layer rows to layers.csv."""
        applied = max(self.step - 1, 0)  # the update that produced this row (step 0: the first one to come)
        loss = self.loss_sum / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        metrics = evaluate(self.model, self.eval_set, self.device, self.autocast, int(self.cfg.eval.batch_size))
        row = {"step": self.step, "loss": loss, **metrics, "lr": self.lr(applied), "wd": self.wd(applied),
               "lr_stage": self.lr.stage(applied), "wd_stage": self.wd.stage(applied),
               "tokens_seen": self.step * self.sampler.batch_size * self.sampler.seq_len,
               "elapsed_s": round(self.elapsed, 3),
               "loss_gap": metrics["eval_loss"] - self.unigram_entropy,
               "effective_tokens": math.exp(metrics["pred_entropy"]), "grad_norm": self.grad_norm}
        together, per_layer = self.weights.measure()
        row.update(together)
        self.layers_csv.write_many({"step": self.step, **layer} for layer in per_layer)
        evaluation = len([s for s in self.eval_steps if s <= self.step]) - 1
        if self.generate_every and evaluation % self.generate_every == 0:
            row.update(generation_report(self.model, self.corpus.tokenizer, self.prompts, self.cfg.eval.generate,
                                         self.step, self.out_dir, self.autocast))
        return row

    def train_step(self) -> torch.Tensor:
        """One optimizer update at `self.step` (which the caller advances); also what `bitnet.bench` times."""
        cfg = self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
            group["weight_decay"] = self.wd(self.step) if group["decays"] else 0.0
        inputs, targets = self.sampler.next_batch()
        inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.forward(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                               label_smoothing=float(cfg.label_smoothing))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reported = self.step + 1 in self.eval_steps  # the norm is only reported on evaluation rows
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg.grad_clip))
        elif reported:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if reported:
            self.grad_norm = float(norm)
        self.optimizer.step()
        return loss.detach()

    def run(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = config_fingerprint(self.cfg)
        previous = read_record(self.out_dir)
        if previous and previous.get("status") in FINISHED_STATUSES:
            if previous.get("config_fingerprint") != self.fingerprint:
                raise ValueError(f"{self.out_dir} holds a finished run of a different config; "
                                 f"use another output folder")
            log.info(f"Already {previous['status']} at step {previous['step']}: {self.csv_path} (skipped)")
            return {**previous, "skipped": True}

        try:
            self._setup()
            self.step, self.elapsed, self.loss_sum, self.loss_count = 0, 0.0, 0.0, 0
            resumed = self._load_checkpoint()
        except BaseException as err:  # e.g. an unreadable checkpoint: still leave a record saying so
            write_record(self.out_dir, {**(previous or {}), "status": FAILED, "error": f"{type(err).__name__}: {err}",
                                        "config_fingerprint": self.fingerprint, "metrics_csv": METRICS_FILE,
                                        "config": OmegaConf.to_container(self.cfg, resolve=True)})
            raise
        if not resumed:  # a killed run that never checkpointed starts over
            self.csv_path.unlink(missing_ok=True)
            self.layers_path.unlink(missing_ok=True)
        if resumed:
            log.info(f"Resuming from the checkpoint at step {self.step}")
        self._record(RUNNING)
        csv = MetricsCSV(self.csv_path, METRIC_COLUMNS)
        self.layers_csv = MetricsCSV(self.layers_path, LAYER_COLUMNS)
        try:
            return self._loop(csv, resumed)
        except Diverged as err:
            log.warning(f"Diverged: {err}; point stopped, the sweep goes on")
            return self._record(DIVERGED, diverged_step=err.step, error=str(err))
        except BaseException as err:
            self._record(FAILED, error=f"{type(err).__name__}: {err}")
            raise
        finally:
            csv.close()
            self.layers_csv.close()

    def _loop(self, csv: MetricsCSV, resumed: bool) -> dict:
        from tqdm.auto import tqdm

        if not resumed:
            csv.write(self._evaluation_row())
        bar = tqdm(total=self.last_step, initial=self.step, disable=not self.cfg.progress, unit="step",
                   dynamic_ncols=True, mininterval=1.0, leave=False)
        refresh_every = max(1, min(int(self.cfg.eval.every), 20))
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
                row = self._evaluation_row()
                csv.write(row)
                unique = str(row["unique_tokens"])
                if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self.step < self.last_step:
                    self._save_checkpoint()
                    self._record(RUNNING)
        bar.close()
        self.elapsed = time.perf_counter() - started
        record = self._record(COMPLETED)  # then drop the checkpoint: a kill in between still leaves a finished point
        self.checkpoint_path.unlink(missing_ok=True)
        return record
