"""The typed configuration of one run, built from the composed Hydra config.

Each component owns its keys, their allowed values and its own checks, next to its code:

    model     bitnet.model.ModelConfig        optim   bitnet.optim.OptimConfig
    lr, wd    bitnet.schedules.LRSchedule, WDSchedule
    data      bitnet.data.DataConfig          eval.generate   bitnet.diagnostics.GenerateConfig
    train     TrainConfig (below)             eval            EvalConfig (below)
    logger    bitnet.loggers.LoggerConfig

The defaults are in conf/ (the YAML files); a key missing from the composed config is an error. `RunConfig`
holds the components and the top-level keys, checks the rules that span components (checkpoints on
evaluation rows, warmup within the run, prompts within the context, stage1_only needs a switch) and derives
what training needs from them (last step, evaluation steps, switch steps, fingerprint), which run.json records
(`recorded_facts`). Building it is the whole config check: `RunConfig.from_config(cfg)` raises `ConfigError`
with a one-line message at the first bad key. `bitnet.validate` adds the checks that need this machine and the data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from omegaconf import DictConfig, OmegaConf

from bitnet.data import DataConfig
from bitnet.devices import parse_device
from bitnet.diagnostics import GenerateConfig
from bitnet.keys import ConfigError, Keys
from bitnet.loggers import LoggerConfig
from bitnet.model import ModelConfig
from bitnet.optim import OptimConfig
from bitnet.records import computed_part
from bitnet.schedules import LRSchedule, WDSchedule

PRECISIONS = ("auto", "bf16", "fp32")


def config_fingerprint(resolved: dict) -> str:
    """What a resolved config computes, as a short hash (bitnet.records.UNCOMPUTED_KEYS left out). Computed from
    the config a run.json records, not read from it, so that runs recorded under an older rule compare by
    content."""
    return hashlib.sha256(json.dumps(computed_part(resolved), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvaluationSteps:
    """Steps 0, every, 2 every, ... and the last step, as a rule rather than a set (constant memory for any
    train.steps)."""

    total: int
    every: int

    def __contains__(self, step: int) -> bool:
        return step == self.total or (0 <= step < self.total and step % self.every == 0)

    def number(self, step: int) -> int:
        """0 for the first evaluation (step 0), 1 for the next, ..."""
        return -(-step // self.every)


@dataclass(frozen=True)
class TrainConfig:
    """`train` (defaults in conf/config.yaml)."""

    steps: int                   # optimizer updates: the schedules' horizon
    batch_size: int              # sequences per update
    grad_clip: float | None      # max gradient norm; None = no clipping
    label_smoothing: float       # of the training cross-entropy, in [0, 1)
    stage1_only: bool            # stop at the first LR/WD switch (needs a two_stage schedule)
    checkpoint_every: int        # steps between checkpoints, a multiple of eval.every; 0 (or null) = none

    @classmethod
    def from_keys(cls, keys: Keys) -> TrainConfig:
        return cls(steps=keys.positive("steps"), batch_size=keys.positive("batch_size"),
                   grad_clip=keys.number("grad_clip", 0, None, "a positive number (max gradient norm) or null for "
                                         "no clipping", low_open=True, optional=True),
                   label_smoothing=keys.number("label_smoothing", 0, 1, "a number in [0, 1)", high_open=True),
                   stage1_only=keys.boolean("stage1_only"),
                   checkpoint_every=keys.integer("checkpoint_every", 0, "an integer >= 0 (0 = no checkpoints)",
                                                 optional=True) or 0)


@dataclass(frozen=True)
class EvalConfig:
    """`eval` (defaults in conf/eval/default.yaml): the fixed held-out positions and what is measured there."""

    every: int                   # steps between evaluation rows (also at step 0 and the last step)
    positions: int               # held-out next-token positions scored
    batch_size: int              # windows per forward pass
    generate: GenerateConfig     # continuations of held-out prompts

    @classmethod
    def from_keys(cls, keys: Keys) -> EvalConfig:
        return cls(every=keys.positive("every", "steps between evaluations"),
                   positions=keys.positive("positions", "held-out positions scored"),
                   batch_size=keys.positive("batch_size"), generate=GenerateConfig.from_keys(keys.sub("generate")))


@dataclass(frozen=True)
class RunConfig:
    """One grid point's whole config: the components, the top-level keys and the rules between them."""

    model: ModelConfig
    optim: OptimConfig
    lr: LRSchedule
    wd: WDSchedule
    data: DataConfig
    eval: EvalConfig
    train: TrainConfig
    seed: int                    # torch's seed before the model is built, and the batch sampler's
    device: str                  # a device name or auto (bitnet.devices: parse_device, assign_device)
    precision: str               # one of PRECISIONS; auto = bf16 autocast on CUDA, fp32 on CPU
    compile: bool                # torch.compile the model
    threads: int | None          # CPU threads; None = the cores shared among concurrent jobs
    progress: bool               # progress bar
    logger: LoggerConfig         # where metrics rows are mirrored besides metrics.csv
    resolved: dict               # the composed config, resolved (run.json, fingerprint)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunConfig:
        """Read and check every key of `cfg`; ConfigError (one line) at the first problem."""
        if "hydra" in cfg:  # a config from load_sweep_config: the task's part
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        keys = Keys(cfg)
        precision = keys.choice("precision", PRECISIONS)
        compile_, progress = keys.boolean("compile"), keys.boolean("progress")
        threads = keys.positive("threads", "CPU threads", optional=True)
        seed = keys.seed("seed")
        device = keys.get("device")
        try:
            parse_device(device)
        except ValueError as err:  # not a device name; whether this machine has it is bitnet.validate's check
            raise ConfigError(str(err)) from None
        data = DataConfig.from_keys(keys.sub("data"))
        model = ModelConfig.from_keys(keys.sub("model"), vocab_size=data.vocab_size, max_seq_len=data.seq_len)
        optim = OptimConfig.from_keys(keys.sub("optim"))
        evaluation = EvalConfig.from_keys(keys.sub("eval"))
        train = TrainConfig.from_keys(keys.sub("train"))
        prompt = evaluation.generate.prompt_tokens
        if prompt > data.seq_len:
            raise ConfigError(f"eval.generate.prompt_tokens={prompt}: longer than the model's context; allowed "
                              f"1..{data.seq_len} (data.seq_len={data.seq_len})")
        if train.checkpoint_every % evaluation.every:
            raise ConfigError(f"train.checkpoint_every={train.checkpoint_every}: must be a multiple of eval.every="
                              f"{evaluation.every} (checkpoints are taken at evaluation rows) or 0 for none")
        config = cls(model=model, optim=optim, lr=LRSchedule.from_keys(keys.sub("lr"), train.steps),
                     wd=WDSchedule.from_keys(keys.sub("wd"), train.steps), data=data, eval=evaluation, train=train,
                     seed=seed, device=device, precision=precision, compile=compile_, threads=threads,
                     progress=progress, logger=LoggerConfig.from_keys(keys.sub("logger")), resolved=OmegaConf.to_container(cfg, resolve=True))
        config.check_run_length()
        keys.check_all_read()  # last: every component has read its keys by now
        return config

    def check_run_length(self) -> None:
        if self.train.stage1_only and not self.switches:
            raise ConfigError(f"train.stage1_only=true: needs lr=two_stage or wd=two_stage (the run stops at the "
                              f"first switch), but lr.name={self.lr.name} and wd.name={self.wd.name}")
        steps, length = self.train.steps, self.last_step
        if self.lr.warmup > length:
            what = f"train.steps={steps}" if length == steps else f"the {length} steps that run (train.stage1_only)"
            raise ConfigError(f"lr.warmup={self.lr.warmup}: longer than the run; allowed 0..{length} ({what})")

    @property
    def switches(self) -> list[int]:
        return [s for s in (self.lr.switch, self.wd.switch) if s is not None]

    @property
    def switch_steps(self) -> dict:
        """The step each schedule switches to stage 2 at (None: it has no switch), as run.json records it."""
        return {"lr": self.lr.switch, "wd": self.wd.switch}

    @property
    def last_step(self) -> int:
        """The steps that actually run: `train.steps`, or the first switch with `train.stage1_only`."""
        return min(self.switches) if self.train.stage1_only else self.train.steps

    @property
    def eval_steps(self) -> EvaluationSteps:
        """Steps with an evaluation row: 0, every `eval.every` steps and the last step."""
        return EvaluationSteps(self.last_step, self.eval.every)

    @property
    def recorded_facts(self) -> dict:
        """What run.json states about the run's course, derived here once (bitnet.records.RunRecord): the steps
        that run, the horizon, where each schedule switches and how often it is evaluated. The analysis reads
        these and never derives them again."""
        return {"last_step": self.last_step, "total_steps": self.train.steps, "switch_steps": self.switch_steps,
                "eval_every": self.eval.every}

    @cached_property
    def fingerprint(self) -> str:
        """What the run computes (config_fingerprint): a checkpoint or a finished run of another fingerprint is
        never resumed or skipped as this one."""
        return config_fingerprint(self.resolved)
