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

from bitnet.keys import ConfigError, Keys, check_choice
from bitnet.switches import midpoint, switch_at

LR_SCHEDULES = ("constant", "linear", "cosine", "two_stage")
WD_SCHEDULES = ("constant", "two_stage", "cosine")


class TwoStage:
    """What both schedules share: their name is one of `choices`, and `two_stage` switches at `switch_step`
    (None: the midpoint of the run), checked to lie inside the run; `stage(step)` is 1 before the switch and
    2 from it on."""

    choices: tuple[str, ...]
    key: str

    def __post_init__(self):
        check_choice(f"{self.key}.name", self.name, self.choices, group=self.key)

    @classmethod
    def read_name(cls, keys: Keys) -> str:
        return keys.choice("name", cls.choices, group=cls.key)

    @staticmethod
    def read_switch(keys: Keys, name: str, steps: int) -> int | None:
        """`switch_step` of a two_stage schedule (null = the midpoint), checked to lie inside the run."""
        if name != "two_stage":
            return None
        key = "switch_step"
        if keys.get(key) is None:
            if not 1 <= midpoint(steps) <= steps - 1:
                raise ConfigError(f"{keys.path(key)}=null: the midpoint of a {steps}-step run is step "
                                  f"{midpoint(steps)}, outside the run; two_stage needs train.steps >= 2")
            return None
        value = keys.integer(key, 1, f"an integer in 1..{steps - 1} (a step inside the run, train.steps={steps}) "
                                     f"or null for the midpoint")
        if value > steps - 1:
            raise ConfigError(f"{keys.path(key)}={value}: outside the run; allowed 1..{steps - 1} "
                              f"(train.steps={steps}) or null for the midpoint")
        return value

    @property
    def switch(self) -> int | None:
        return switch_at(self.name, self.switch_step, self.total_steps)

    def stage(self, step: int) -> int:
        return 2 if self.switch is not None and step >= self.switch else 1


@dataclass(frozen=True)
class LRSchedule(TwoStage):
    """The `lr` config group (defaults in conf/lr/*.yaml). Linear warmup to `peak`, then:
    constant   peak;
    linear     straight line from peak to final_ratio * peak at the end of the horizon;
    cosine     half cosine from peak to final_ratio * peak;
    two_stage  Microsoft's FAQ Fig. 1: the linear line, except that from `switch_step` on the LR lies on the
               line of a second linear schedule whose virtual peak is `stage2_peak`.
    Keys a schedule does not use are None (their values are in conf/lr/).
    """

    name: str                        # LR_SCHEDULES
    peak: float                      # the peak learning rate
    warmup: int                      # warmup steps (at most the steps that run)
    total_steps: int                 # the horizon: train.steps
    final_ratio: float | None = None   # final LR / peak (linear, cosine, two_stage)
    switch_step: int | None = None     # two_stage: the step updates switch to stage 2; None = the midpoint
    stage2_peak: float | None = None   # two_stage: the stage-2 virtual peak

    choices, key = LR_SCHEDULES, "lr"

    @classmethod
    def from_keys(cls, keys: Keys, total_steps: int) -> LRSchedule:
        name = cls.read_name(keys)
        decays, two_stage = name != "constant", name == "two_stage"
        return cls(
            name=name, total_steps=total_steps,
            peak=keys.number("peak", 0, None, "a positive number (the peak learning rate)", low_open=True),
            warmup=keys.integer("warmup", 0, f"an integer >= 0 (warmup steps, at most train.steps={total_steps})"),
            final_ratio=keys.number("final_ratio", 0, 1, "a number in [0, 1] (final LR / peak LR)") if decays else None,
            stage2_peak=keys.number("stage2_peak", 0, None, "a positive number (the stage-2 virtual peak LR)",
                                    low_open=True) if two_stage else None,
            switch_step=cls.read_switch(keys, name, total_steps))

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
    """The `wd` config group (defaults in conf/wd/*.yaml); weight decay of the matrices:
    constant   `value` throughout;
    two_stage  `value` until `switch_step`, `stage2_value` from it on (a step function, as the FAQ draws);
    cosine     half cosine from `value` to `final_value` over the horizon.
    Keys a schedule does not use are None (their values are in conf/wd/).
    """

    name: str                        # WD_SCHEDULES
    value: float                     # weight decay (stage 1, or the start of the cosine)
    total_steps: int                 # the horizon: train.steps
    stage2_value: float | None = None  # two_stage: weight decay from the switch on
    switch_step: int | None = None     # two_stage: the switch step; None = the midpoint
    final_value: float | None = None   # cosine: weight decay at the end

    choices, key = WD_SCHEDULES, "wd"

    @classmethod
    def from_keys(cls, keys: Keys, total_steps: int) -> WDSchedule:
        name = cls.read_name(keys)
        return cls(
            name=name, total_steps=total_steps, value=keys.number("value", 0, None, "a number >= 0 (weight decay)"),
            stage2_value=keys.number("stage2_value", 0, None, "a number >= 0 (stage-2 weight decay)")
            if name == "two_stage" else None,
            final_value=keys.number("final_value", 0, None, "a number >= 0 (final weight decay)")
            if name == "cosine" else None,
            switch_step=cls.read_switch(keys, name, total_steps))

    def __call__(self, step: int) -> float:
        if self.name == "constant":
            return self.value
        if self.name == "two_stage":
            return self.stage2_value if self.stage(step) == 2 else self.value
        progress = step / max(1, self.total_steps - 1)
        return self.final_value + (self.value - self.final_value) * 0.5 * (1 + math.cos(math.pi * progress))
