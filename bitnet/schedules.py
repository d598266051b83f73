"""Learning-rate and weight-decay schedules, as pure functions of the update index.

`step` below is the 0-based index of an optimizer update. Update `step` uses `lr(step)` and `wd(step)`;
the CSV row written after `n` updates records the values of update `n - 1`. A switch at step S means updates
S, S+1, ... use the stage-2 value, so the row at step S is still stage 1 and the next row is stage 2.

The LR and WD switch steps are separate keys on purpose: Microsoft (and the seeds) switch both at once,
which confounds which one causes the recovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LR_SCHEDULES = ("constant", "linear", "cosine", "two_stage")
WD_SCHEDULES = ("constant", "two_stage", "cosine")


def midpoint(total_steps: int) -> int:
    return total_steps // 2


class TwoStage:
    """What both schedules share: their name is checked, and `two_stage` switches at `switch_step`
    (default: the midpoint of the run); `stage(step)` is 1 before the switch and 2 from it on."""

    choices: tuple[str, ...]
    key: str

    def __post_init__(self):
        if self.name not in self.choices:
            raise ValueError(f"{self.key}.name={self.name!r}: expected one of {', '.join(self.choices)}")

    @property
    def switch(self) -> int | None:
        if self.name != "two_stage":
            return None
        return midpoint(self.total_steps) if self.switch_step is None else self.switch_step

    def stage(self, step: int) -> int:
        return 2 if self.switch is not None and step >= self.switch else 1


@dataclass(frozen=True)
class LRSchedule(TwoStage):
    """Linear warmup to `peak`, then:
    constant   peak;
    linear     straight line from peak to final_ratio * peak at the end of the horizon;
    cosine     half cosine from peak to final_ratio * peak;
    two_stage  Microsoft's FAQ Fig. 1: the linear line, except that from `switch_step` on the LR lies on the
               line of a second linear schedule whose virtual peak is `stage2_peak`.
    """

    name: str
    peak: float
    warmup: int
    total_steps: int
    final_ratio: float = 0.0
    switch_step: int | None = None
    stage2_peak: float | None = None

    choices, key = LR_SCHEDULES, "lr"

    def __call__(self, step: int) -> float:
        peak = self.stage2_peak if self.stage(step) == 2 else self.peak
        if step < self.warmup:
            return peak * (step + 1) / self.warmup
        if self.name == "constant":
            return peak
        progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        if self.name == "cosine":
            return peak * (self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        return peak * (1 - (1 - self.final_ratio) * progress)


@dataclass(frozen=True)
class WDSchedule(TwoStage):
    """constant   `value` throughout;
    two_stage  `value` until `switch_step`, `stage2_value` from it on (a step function, as the FAQ draws);
    cosine     half cosine from `value` to `final_value` over the horizon.
    """

    name: str
    value: float
    total_steps: int
    stage2_value: float = 0.0
    switch_step: int | None = None
    final_value: float = 0.0

    choices, key = WD_SCHEDULES, "wd"

    def __call__(self, step: int) -> float:
        if self.name == "constant":
            return self.value
        if self.name == "two_stage":
            return self.stage2_value if self.stage(step) == 2 else self.value
        progress = step / max(1, self.total_steps - 1)
        return self.final_value + (self.value - self.final_value) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(cfg, total_steps: int) -> LRSchedule:
    return LRSchedule(name=cfg.name, peak=float(cfg.peak), warmup=int(cfg.warmup), total_steps=total_steps,
                      final_ratio=float(cfg.get("final_ratio", 0.0)), switch_step=cfg.get("switch_step"),
                      stage2_peak=cfg.get("stage2_peak"))


def wd_schedule(cfg, total_steps: int) -> WDSchedule:
    return WDSchedule(name=cfg.name, value=float(cfg.value), total_steps=total_steps,
                      stage2_value=float(cfg.get("stage2_value", 0.0)), switch_step=cfg.get("switch_step"),
                      final_value=float(cfg.get("final_value", 0.0)))
