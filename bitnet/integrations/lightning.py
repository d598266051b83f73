"""A Lightning `Callback` that writes bitnet's metrics.csv and run.json.

    from bitnet.integrations.lightning import DiversityCallback
    callback = DiversityCallback("runs/mine-h256", val_ids, every=100, positions=4096, seq_len=256,
                                 labels={"hidden": 256})
    lightning.Trainer(max_steps=10_000, callbacks=[callback]).fit(module, train_loader)

Rows at step 0, every `every` optimizer steps and at the last step. The LightningModule is called with a
(batch, seq) tensor of token ids and must return logits, (logits, hidden) or an object with `.logits`; pass
`forward=` (see bitnet.probe.Probe) when it needs something else. `loss` is the mean of the losses returned by
`training_step` since the previous row; `lr` and `wd` are the first optimizer's at the last update. The setup check
(bitnet.setup_check) runs on the module and the first optimizer at the first row: each finding is printed once
and recorded in run.json under "setup_findings".
"""

from __future__ import annotations

import math
import time

from lightning.pytorch import Callback

from bitnet.probe import Probe, RunningMean, merged
from bitnet.records import COMPLETED, FAILED


def _loss_of(outputs):
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return float(loss) if loss is not None else None


class DiversityCallback(Callback):
    """Evaluates the LightningModule on fixed held-out positions of `val_ids` (bitnet.probe.Probe; the keyword
    arguments are Probe's) and appends metrics.csv rows in `out_dir`. Only global rank 0 writes."""

    def __init__(self, out_dir, val_ids, *, every: int = 50, **probe_kwargs):
        self.out_dir, self.val_ids, self.every, self.probe_kwargs = out_dir, val_ids, every, probe_kwargs
        self.probe = None
        self.loss = RunningMean()
        self.update = {}

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        known = {"train": {"steps": int(steps) if math.isfinite(steps) else None,  # no limit: unknown length
                           "grad_clip": trainer.gradient_clip_val}}
        options = dict(self.probe_kwargs)
        self.probe = Probe(self.out_dir, self.val_ids, source="lightning.Trainer",
                           config=merged(known, options.pop("config", {})),
                           settings={"hparams": dict(pl_module.hparams), "precision": str(trainer.precision),
                                     "accumulate_grad_batches": trainer.accumulate_grad_batches},
                           optimizer=trainer.optimizers[0] if trainer.optimizers else None, **options)
        self.started = time.perf_counter()
        self._capture(trainer)
        self._row(trainer, pl_module)

    def _capture(self, trainer):
        if trainer.optimizers:
            group = trainer.optimizers[0].param_groups[0]
            self.update = {"lr": group["lr"], "wd": group.get("weight_decay")}

    def _row(self, trainer, pl_module):
        self.probe(pl_module, trainer.global_step, loss=self.loss.pop(), **self.update,
                   elapsed_s=round(time.perf_counter() - self.started, 3))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.probe is not None:
            self._capture(trainer)  # the LR and WD this update uses (schedulers step after it)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.probe is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            self.loss.add(loss)
        step = trainer.global_step
        if step != self.probe.step and step % self.every == 0:
            self._row(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if self.probe is None:
            return
        if trainer.global_step != self.probe.step:
            self._row(trainer, pl_module)
        self.probe.finish(COMPLETED)

    def on_exception(self, trainer, pl_module, exception):
        if self.probe is not None:
            self.probe.finish(FAILED, error=f"{type(exception).__name__}: {exception}")
