"""The diversity metric for any language model: fixed held-out positions, one evaluation, metrics.csv rows.

bitnet's own training loop evaluates through `evaluate` below, so a model trained elsewhere (a plain PyTorch
loop, Hugging Face `Trainer`, Lightning) measured with it gets the same numbers bitnet would write, in a run
folder that `python -m analysis.tables` reads like one of its grid points. No Hydra, no bitnet model needed:

    from bitnet.probe import Probe
    probe = Probe("runs/mine", val_ids, positions=4096, seq_len=256, labels={"hidden": 256})
    for step in ...:
        ...
        row = probe(model, step, loss=train_loss)   # appends one row to runs/mine/metrics.csv
        print(step, row["unique_tokens"], probe.phase(row))
    probe.finish()                                  # run.json status: completed

`model` is any callable taking a (batch, seq) LongTensor of token ids and returning next-token logits
(batch, seq, vocab), a (logits, hidden) tuple, or an object with `.logits` (and `.hidden_states`, as
Hugging Face models return with output_hidden_states=True). Pass `forward=` when the model needs other
arguments. Hidden-state cosine is measured when final hidden states come back, and left empty otherwise.
"""

from __future__ import annotations

import contextlib
import math
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bitnet import __version__
from bitnet.data import EvalSet, make_eval_set
from bitnet.diagnostics import CosineAccumulator, parameter_group_rms, unigram_entropy
from bitnet.metrics import effective_tokens, prediction_diversity
from bitnet.phases import learning_phase
from bitnet.records import METRIC_COLUMNS  # noqa: F401 - the columns a Probe writes, public here too
from bitnet.records import COMPLETED, METRICS_FILE, RUNNING, MetricsCSV, run_record, write_record
from bitnet.setup_check import Finding, check_setup, peak_lr, report  # noqa: F401 - bitnet.probe.check_setup is public

if TYPE_CHECKING:
    from bitnet.loggers import LoggerConfig


def split_output(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, final hidden states or None) from what a language model returns."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, (tuple, list)):
        hidden = output[1] if len(output) > 1 and isinstance(output[1], torch.Tensor) else None
        return output[0], hidden
    logits = getattr(output, "logits", None)
    if logits is None:
        raise TypeError(f"the model returned {type(output).__name__}: expected logits, a (logits, hidden) tuple or "
                        f"an object with .logits")
    hidden_states = getattr(output, "hidden_states", None)
    return logits, hidden_states[-1] if hidden_states else None


def _device_of(model) -> torch.device:
    parameters = model.parameters() if isinstance(model, torch.nn.Module) else iter(())
    first = next(parameters, None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model, eval_set: EvalSet, *, forward=None, device: torch.device | None = None,
             autocast=contextlib.nullcontext, batch_size: int = 16, unigram_entropy: float | None = None) -> dict:
    """One evaluation over the fixed held-out positions of `eval_set`: the metrics.csv columns

    eval_loss         mean cross-entropy (nats)
    unique_tokens, unique_targets, pred_entropy, top1_share   the diversity metric (bitnet.metrics)
    effective_tokens  exp(pred_entropy)
    softmax_entropy   mean entropy (nats) of the predicted distribution; ln(vocab) when it is uniform
    hidden_cosine     mean pairwise cosine of the final hidden states (None when the model returns none)
    logit_std         the logit scale: mean over positions of the std of the logits across the vocabulary
                      (0 for a model that predicts the uniform distribution)
    loss_gap          eval_loss - unigram_entropy (None when the unigram entropy is not given)

    `forward(ids)` (default: `model`) runs the model; an nn.Module is put in eval mode and given back in the
    mode it was in. `autocast` is a context-manager factory (bf16 autocast on CUDA in bitnet's loop)."""
    forward = forward or model
    device = device or _device_of(model)
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    mask = eval_set.mask
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    entropy_sum = torch.zeros((), device=device, dtype=torch.float64)
    logit_std_sum = torch.zeros((), device=device, dtype=torch.float64)
    predictions, cosine = [], CosineAccumulator()
    for start in range(0, len(eval_set.inputs), batch_size):
        rows = slice(start, start + batch_size)
        keep = mask[rows].to(device)
        with autocast():
            logits, hidden = split_output(forward(eval_set.inputs[rows].to(device)))
        logits, targets = logits.float()[keep], eval_set.targets[rows].to(device)[keep]
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        log_probs = logits.log_softmax(-1)
        entropy_sum -= (log_probs.exp() * log_probs).sum()
        logit_std_sum += logits.std(-1).sum()
        predictions.append(logits.argmax(-1))
        if hidden is not None:
            cosine.add(hidden[keep])
    if was_training is not None:
        model.train(was_training)
    metrics = prediction_diversity(torch.cat(predictions), eval_set.targets[mask])
    eval_loss = float(loss_sum) / eval_set.positions
    return {"eval_loss": eval_loss, **metrics, "effective_tokens": effective_tokens(metrics["pred_entropy"]),
            "softmax_entropy": float(entropy_sum) / eval_set.positions, "hidden_cosine": cosine.value(),
            "logit_std": float(logit_std_sum) / eval_set.positions,
            "loss_gap": eval_loss - unigram_entropy if unigram_entropy is not None else None}


def measurement_facts(eval_set: EvalSet, vocab_size: int | None, unigram_entropy: float | None) -> dict:
    """What run.json says about how the metric was measured (bitnet's runs and probes alike); the analysis
    reads ln_vocab and unigram_entropy for the learning phase, eval_positions for the reachable classes."""
    return {"vocab_size": vocab_size, "ln_vocab": math.log(vocab_size) if vocab_size else None,
            "unigram_entropy": unigram_entropy, "eval_positions": eval_set.positions,
            "eval_unique_targets": int(eval_set.targets[eval_set.mask].unique().numel())}


def versions() -> dict:
    return {"bitnet": __version__, "torch": torch.__version__, "python": platform.python_version()}


def merged(base: dict, update: dict) -> dict:
    """`base` with `update` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class RunningMean:
    """The mean of values added since the last `pop` (e.g. training losses since the previous row)."""

    def __init__(self):
        self.total, self.weight = 0.0, 0.0

    def add(self, value: float, weight: float = 1.0) -> None:
        self.total += float(value) * weight
        self.weight += weight

    def pop(self) -> float | None:
        mean = self.total / self.weight if self.weight else None
        self.total, self.weight = 0.0, 0.0
        return mean


class Probe:
    """A run folder for a model trained outside bitnet: metrics.csv (bitnet's columns; what a foreign loop
    cannot know, such as BitLinear flip rates, stays empty) and run.json (what is known about the run; the
    rest null).

    out_dir     the run folder (created). An existing metrics.csv is continued from the first step this Probe
                writes: its rows at or after that step are replaced, so a resumed run leaves no duplicates
    val_ids     1-D held-out token ids; `positions` next-token positions in windows of `seq_len` tokens are
                chosen from them as bitnet chooses its own (bitnet.data.make_eval_set)
    train_ids   training token ids, optional: their unigram entropy gives loss_gap (else empty)
    vocab_size  the tokenizer's vocabulary; default: the width of the model's logits
    labels      what tells this run apart from the others compared with it, e.g. {"hidden": 256}; the analysis
                groups and names runs by them (as it does by a sweep's overrides)
    config      known settings under bitnet's config keys, e.g. {"lr": {"peak": 1e-3}, "train": {"steps": 1000}};
                train.steps is the run's length, lr/wd.switch_step mark a schedule switch for the analysis
    settings    the training code's own settings, kept verbatim in run.json
    logger      also mirror each row and the config (run.json's config and settings) into a tracker:
                "tensorboard", "mlflow", "wandb" with their defaults (conf/logger/), or a
                bitnet.loggers.LoggerConfig (LoggerConfig.preset("mlflow", tracking_uri=...)); a failing tracker
                is dropped with a warning, metrics.csv goes on
    params      parameter counts {"total", "embedding", "non_embedding"}; default: the model's total alone
    forward, autocast   how to run the model (see `evaluate`)
    optimizer   the training optimizer, optional: the setup check (bitnet.setup_check.check_setup) runs once at
                the first measurement, on the model and this optimizer (model-only rules without it), prints
                each finding with `emit` and records them in run.json under "setup_findings" (null when
                not checked); setup_check=False turns it off
    """

    def __init__(self, out_dir, val_ids, *, positions: int = 4096, seq_len: int = 256, batch_size: int = 16,
                 train_ids=None, vocab_size: int | None = None, labels: dict | None = None,
                 config: dict | None = None, settings: dict | None = None, params: dict | None = None,
                 forward=None, autocast=contextlib.nullcontext, source: str = "bitnet.probe",
                 logger: LoggerConfig | str | None = None, optimizer=None, setup_check: bool = True, emit=print):
        self.out_dir = Path(out_dir)
        self.eval_set = make_eval_set(torch.as_tensor(val_ids, dtype=torch.long).flatten(), positions, seq_len)
        self.batch_size, self.forward, self.autocast, self.source = batch_size, forward, autocast, source
        self.vocab_size = vocab_size
        self.unigram_entropy = None
        if train_ids is not None:
            train_ids = torch.as_tensor(train_ids, dtype=torch.long).flatten()
            self.unigram_entropy = unigram_entropy(train_ids, vocab_size or 0)
        self.labels, self.config, self.settings = dict(labels or {}), dict(config or {}), settings
        self.params = params
        self.optimizer, self.emit = optimizer, emit
        self.setup_pending, self.setup_findings = setup_check, None
        self.step = None
        self._csv = None
        self.logger, self._trackers = logger, None
        if isinstance(logger, str):  # bitnet.loggers reads YAML configs (omegaconf), which a probe alone never needs
            from bitnet.loggers import LoggerConfig

            self.logger = LoggerConfig.preset(logger)

    def _forward(self, model):
        forward = self.forward or model

        def measured(ids):
            output = forward(ids)
            if self.vocab_size is None:  # the model's own output width, not a guess
                self.vocab_size = int(split_output(output)[0].shape[-1])
            return output
        return measured

    def __call__(self, model, step: int, loss: float | None = None, **columns) -> dict:
        """Evaluate `model` at optimizer step `step` and append the row; `loss` is the mean training loss
        since the previous row; other metrics.csv columns (lr, wd, tokens_seen, elapsed_s...) by name."""
        row = self.measure(model, step, loss=loss, **columns)
        self.write(row)
        return row

    def measure(self, model, step: int, **columns) -> dict:
        """The row of `model` at `step`, not written yet (`write` appends it)."""
        if self.params is None and isinstance(model, torch.nn.Module):
            self.params = {"total": sum(p.numel() for p in model.parameters())}
        if self.setup_pending and isinstance(model, torch.nn.Module):
            self.setup_pending = False
            width = self.labels.get("hidden", self.config.get("hidden"))
            # The optimizer's own peak first (a Trainer given its own optimizer does not use its learning_rate)
            lr = (peak_lr(self.optimizer) if self.optimizer is not None else None) or (
                self.config.get("lr") or {}).get("peak")
            findings = check_setup(model, self.optimizer, lr=lr, width=width if isinstance(width, int) else None)
            self.setup_findings = report(findings, self.emit)
        metrics = evaluate(model, self.eval_set, forward=self._forward(model), autocast=self.autocast,
                           batch_size=self.batch_size, unigram_entropy=self.unigram_entropy)
        groups = parameter_group_rms(model) if isinstance(model, torch.nn.Module) else {}
        return {"step": int(step), **metrics, **groups, **columns}

    def phase(self, row: dict) -> str:
        """The learning phase of a row (bitnet.phases.learning_phase, from its eval loss, ln of the vocabulary
        and the unigram entropy): near-uniform, unigram, contextual, or unknown without train_ids."""
        ln_vocab = math.log(self.vocab_size) if self.vocab_size else None
        return learning_phase(row.get("eval_loss"), ln_vocab, self.unigram_entropy)

    def write(self, row: dict) -> None:
        if self._csv is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            continued = (self.out_dir / METRICS_FILE).exists()
            MetricsCSV.truncate_after(self.out_dir / METRICS_FILE, row["step"] - 1)
            self._csv = MetricsCSV(self.out_dir / METRICS_FILE, METRIC_COLUMNS)
            if self.logger is not None:
                from bitnet.loggers import start_trackers

                self._trackers = start_trackers(self.logger, self.out_dir, self._mirrored_config(),
                                                row["step"] - 1 if continued else None)
        self._csv.write(row)
        if self._trackers is not None:
            self._trackers.log_row(row["step"], row)
        self.step = row["step"]
        self.record(RUNNING)

    def _known_config(self) -> dict:
        """run.json's config: the labels and the known settings under bitnet's keys."""
        return {**self.labels, **self.config}

    def _mirrored_config(self) -> dict:
        return {**self._known_config(), **({"settings": self.settings} if self.settings else {})}

    def record(self, status: str, **extra) -> dict:
        """Write run.json. Unknowns are null: the analysis reports them as unknown."""
        steps = (self.config.get("train") or {}).get("steps")
        record = run_record(status, step=self.step, last_step=steps, total_steps=steps,
                            params=self.params or {"total": None},
                            **measurement_facts(self.eval_set, self.vocab_size, self.unigram_entropy),
                            labels=self.labels, source=self.source, versions=versions(), config=self._known_config(),
                            settings=self.settings, setup_findings=self.setup_findings, **extra)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_record(self.out_dir, record)
        return record.to_json()

    def finish(self, status: str = COMPLETED, **extra) -> dict:
        """Close metrics.csv and mark the run finished (completed, or e.g. failed with error=...)."""
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._trackers is not None:
            self._trackers.finish(status)
        return self.record(status, **extra)
