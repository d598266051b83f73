"""A Hugging Face `transformers.Trainer` callback that writes bitnet's metrics.csv and run.json.

    from bitnet.integrations.hf import DiversityCallback
    callback = DiversityCallback("runs/gpt2-h256", val_ids, positions=4096, seq_len=256, labels={"hidden": 256})
    Trainer(model=model, args=args, train_dataset=train, callbacks=[callback]).train()

Rows at step 0, every `every` optimizer steps (default: args.logging_steps, so that each row's `loss` is the
Trainer's logged training loss of the steps since the previous row) and at the last step. `lr`, `wd` and
`grad_norm` are those of the last update before the row. run.json holds what the Trainer and the model config
say (learning rate, weight decay, steps, batch size, width, depth, vocabulary) under bitnet's config keys, and
both verbatim under `settings`. The setup check (bitnet.setup_check) runs on the model and the Trainer's optimizer
at the first row: each finding is printed once and recorded in run.json under "setup_findings".
"""

from __future__ import annotations

import contextlib
import time

import torch
from transformers import TrainerCallback

from bitnet.probe import Probe, RunningMean, merged
from bitnet.records import COMPLETED


def _autocast(args, device: torch.device):
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _known_config(args, state, model) -> dict:
    """The Trainer's and the model's settings under bitnet's config keys (absent when they do not say)."""
    model_config = getattr(model, "config", None)

    def from_model(name):
        return getattr(model_config, name, None) if model_config is not None else None

    config = {"seed": args.seed, "hidden": from_model("hidden_size"),
              "model": {"layers": from_model("num_hidden_layers"), "n_heads": from_model("num_attention_heads")},
              "lr": {"name": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
                     "peak": args.learning_rate, "warmup": args.warmup_steps or None},
              "wd": {"name": "constant", "value": args.weight_decay},
              "train": {"steps": state.max_steps,
                        "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
                        * max(args.world_size, 1),
                        "grad_clip": args.max_grad_norm or None, "label_smoothing": args.label_smoothing_factor},
              "data": {"vocab_size": from_model("vocab_size")}}

    def prune(node):
        return {k: prune(v) if isinstance(v, dict) else v for k, v in node.items() if v is not None and v != {}}
    return prune(config)


class DiversityCallback(TrainerCallback):
    """Evaluates the model on fixed held-out positions of `val_ids` (bitnet.probe.Probe; the keyword arguments
    are Probe's: positions, seq_len, train_ids, labels, config...) and appends metrics.csv rows in `out_dir`.
    Only the main process writes. A crash leaves run.json at `running` (the Trainer has no exception event)."""

    def __init__(self, out_dir, val_ids, *, every: int | None = None, **probe_kwargs):
        self.out_dir, self.val_ids, self.every, self.probe_kwargs = out_dir, val_ids, every, probe_kwargs
        self.probe = None
        self.loss = RunningMean()
        self.pending = None  # a row measured at on_step_end, waiting for the Trainer's log of the same step
        self.update = {}     # lr and wd of the last update

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.every = self.every or (int(args.logging_steps) if args.logging_steps >= 1 else 50)
        model_config = getattr(model, "config", None)
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        total = sum(p.numel() for p in model.parameters())
        params = {"total": total}
        if embedding is not None:
            params.update(embedding=embedding.weight.numel(), non_embedding=total - embedding.weight.numel())
        options = {"vocab_size": getattr(model_config, "vocab_size", None),
                   "forward": lambda ids: model(input_ids=ids, output_hidden_states=True),
                   "autocast": _autocast(args, next(model.parameters()).device), **self.probe_kwargs}
        self.probe = Probe(self.out_dir, self.val_ids, source="transformers.Trainer", params=params,
                           config=merged(_known_config(args, state, model), options.pop("config", {})),
                           settings={"training_args": args.to_dict(),
                                     "model_config": model_config.to_dict() if model_config is not None else None},
                           optimizer=optimizer, **options)
        self.started, self.last_logged = time.perf_counter(), state.global_step
        self._capture(optimizer)
        self.probe.write(self._measure(model, state.global_step))

    def _capture(self, optimizer):
        if optimizer is not None:
            group = optimizer.param_groups[0]
            self.update.update(lr=group["lr"], wd=group.get("weight_decay"))

    def _measure(self, model, step: int) -> dict:
        return self.probe.measure(model, step, lr=self.update.get("lr"), wd=self.update.get("wd"),
                                  elapsed_s=round(time.perf_counter() - self.started, 3))

    def _flush(self) -> None:
        if self.pending is not None:
            self.pending["loss"] = self.loss.pop()
            self.probe.write(self.pending)
            self.pending = None

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.probe is not None:
            self._flush()
            self._capture(optimizer)  # the LR and WD this step's update uses

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.probe is not None and (state.global_step % self.every == 0 or state.global_step >= state.max_steps):
            self._flush()
            self.pending = self._measure(model, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.probe is None or not logs or "loss" not in logs:
            return
        self.loss.add(logs["loss"], max(state.global_step - self.last_logged, 1))  # a mean over those steps
        self.last_logged = state.global_step
        if self.pending is not None and self.pending["step"] == state.global_step:
            self.pending["grad_norm"] = logs.get("grad_norm")  # HF's norm before clipping, as bitnet's
            self._flush()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.probe is None:
            return
        self._flush()
        if self.probe.step != state.global_step:
            self.probe.write({**self._measure(model, state.global_step), "loss": self.loss.pop()})
        self.probe.finish(COMPLETED)
