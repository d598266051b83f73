"""Checks a composed config before anything is built or trained, with one-line messages that name the key,
the bad value and what is allowed.

`validate(cfg)` runs every check and raises `ConfigError` at the first problem. The checks come in four
layers, in this order (the data before the resources, so the vocabulary is the real one):

1. the config itself: types, ranges, known choices and the relations between keys (head size, switch steps
   inside the run, warmup no longer than the run, checkpoints on evaluation steps, ...);
2. the machine: `device` names a device this machine has (skip with `device=False`, as the sweeper does for
   SLURM, whose jobs run on other nodes);
3. the data (skip with `data=False`): the text exists and the held-out split has room for `eval.positions`.
   This loads the corpus through the tokenizer cache (a fraction of a second once cached; the first time it
   trains the tokenizer that the run would train anyway);
4. the resources (bitnet.preflight): the memory a training step needs fits the device, and the results fit
   the disk where they go; estimated from the config's sizes, in microseconds.

`python -m bitnet.run` prints the message as `error: <message>` and exits 2; the validating sweeper
(bitnet.sweeper) checks every grid point of a `-m` sweep this way before launching any.
"""

from __future__ import annotations

import json
import math

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException


class ConfigError(ValueError):
    pass


_ABSENT = object()
PRECISIONS = ("auto", "bf16", "fp32")


def _show(value) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() else value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    return str(value).replace("\n", " ")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _get(cfg: DictConfig, key: str, default=_ABSENT):
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required but not set (???): give it on the command line, {key}=...") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: cannot be resolved: {_first_line(err)}") from None
    if value is _ABSENT:
        if default is _ABSENT:
            raise ConfigError(f"{key} is missing from the config: add it with +{key}=...")
        return default
    return value


def _integer(cfg, key: str, minimum: int, allowed: str, optional: bool = False, default=_ABSENT) -> int | None:
    value = _get(cfg, key, default)
    if value is None and optional:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():  # 1e3 is a fine step count
        value, ok = int(value), True
    if not ok or value < minimum:
        raise ConfigError(f"{key}={_show(value)}: must be {allowed}")
    return value


def _positive(cfg, key: str, what: str = "", optional: bool = False, default=_ABSENT) -> int | None:
    allowed = "a positive integer" + (f" ({what})" if what else "") + (" or null" if optional else "")
    return _integer(cfg, key, 1, allowed, optional, default)


def _number(cfg, key: str, low: float | None, high: float | None, allowed: str, *, low_open: bool = False,
            high_open: bool = False, optional: bool = False, default=_ABSENT) -> float | None:
    value = _get(cfg, key, default)
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{key}={_show(value)}: must be {allowed}")
    return float(value)


def _choice(cfg, key: str, options, group: str | None = None) -> str:
    value = _get(cfg, key)
    if value not in options:
        hint = f" (or pick a preset with {group}=...)" if group else ""
        raise ConfigError(f"{key}={_show(value)}: expected one of {', '.join(options)}{hint}")
    return value


def _seed(cfg, key: str, default=_ABSENT) -> int:
    allowed = "an integer >= 0 and < 2**64 (the range torch's random generators accept)"
    value = _integer(cfg, key, 0, allowed, default=default)
    if value >= 2**64:
        raise ConfigError(f"{key}={value}: must be {allowed}")
    return value


def _boolean(cfg, key: str, default=_ABSENT) -> bool:
    value = _get(cfg, key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={_show(value)}: must be true or false")
    return value


# ---- 1. the config -----------------------------------------------------------------------------------------
def _check_model(cfg) -> None:
    from bitnet.model import FFN_KINDS, NORM_PLACEMENTS, head_counts
    from bitnet.quant import QUANT_MODES

    if "hidden" in cfg:  # model.hidden is ${hidden}: name the key the user typed
        _positive(cfg, "hidden", "the model width")
    hidden = _positive(cfg, "model.hidden", "the model width")
    _positive(cfg, "model.layers")
    heads = _positive(cfg, "model.n_heads")
    if hidden % heads or (hidden // heads) % 2:
        fits = [str(n) for n in head_counts(hidden)]
        why = (f"hidden={hidden} is not divisible by it" if hidden % heads
               else f"the head size hidden/n_heads={hidden // heads} is odd (rotary embeddings need it even)")
        raise ConfigError(f"model.n_heads={heads}: {why}; allowed for hidden={hidden}: "
                          f"{', '.join(fits) if fits else 'none (use an even hidden)'}")
    _positive(cfg, "model.ffn_dim", "the FFN width", optional=True, default=None)
    _choice(cfg, "model.quant", QUANT_MODES)
    _choice(cfg, "model.norm", NORM_PLACEMENTS, group="model")
    _choice(cfg, "model.ffn", FFN_KINDS, group="model")
    _boolean(cfg, "model.quantize_head", default=False)
    for suspect in ("model.bitlinear_norm", "model.clamp_act_scale", "model.latent_weights"):
        _boolean(cfg, suspect, default=True)
    for key in ("model.rope_theta", "model.norm_eps", "model.init_std"):
        _number(cfg, key, 0, None, "a positive number", low_open=True)


def _check_optim(cfg) -> None:
    from bitnet.train import DECAY_SETS, OPTIMIZERS

    if _get(cfg, "optim.name", "adamw") not in OPTIMIZERS:
        _choice(cfg, "optim.name", OPTIMIZERS, group="optim")
    if _get(cfg, "optim.decay", "matrices") not in DECAY_SETS:
        _choice(cfg, "optim.decay", DECAY_SETS)
    betas = _get(cfg, "optim.betas")
    values = list(betas) if OmegaConf.is_list(betas) or isinstance(betas, (list, tuple)) else None
    if (values is None or len(values) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in values)):
        raise ConfigError(f"optim.betas={_show(betas)}: must be two numbers in [0, 1), e.g. [0.9,0.95]")
    _number(cfg, "optim.eps", 0, None, "a positive number", low_open=True)


def _run_length(cfg, steps: int, lr_switch: int | None, wd_switch: int | None) -> int:
    """The number of steps that actually run: `train.steps`, or the first switch with stage1_only."""
    if not _boolean(cfg, "train.stage1_only", default=False):
        return steps
    switches = [s for s in (lr_switch, wd_switch) if s is not None]
    if not switches:
        raise ConfigError(f"train.stage1_only=true: needs lr=two_stage or wd=two_stage (the run stops at the "
                          f"first switch), but lr.name={_get(cfg, 'lr.name')} and wd.name={_get(cfg, 'wd.name')}")
    return min(switches)


def _switch(cfg, group: str, steps: int) -> int | None:
    """The effective switch step of a two_stage schedule (null = the midpoint), checked to lie in the run."""
    if _get(cfg, f"{group}.name") != "two_stage":
        return None
    key = f"{group}.switch_step"
    value = _get(cfg, key, None)
    if value is None:
        from bitnet.schedules import midpoint

        if not 1 <= midpoint(steps) <= steps - 1:
            raise ConfigError(f"{key}=null: the midpoint of a {steps}-step run is step {midpoint(steps)}, "
                              f"outside the run; two_stage needs train.steps >= 2")
        return midpoint(steps)
    value = _integer(cfg, key, 1, f"an integer in 1..{steps - 1} (a step inside the run, train.steps={steps}) "
                                  f"or null for the midpoint")
    if value > steps - 1:
        raise ConfigError(f"{key}={value}: outside the run; allowed 1..{steps - 1} (train.steps={steps}) "
                          f"or null for the midpoint")
    return value


def _check_schedules(cfg, steps: int) -> tuple[int | None, int | None]:
    from bitnet.schedules import LR_SCHEDULES, WD_SCHEDULES

    lr_name = _choice(cfg, "lr.name", LR_SCHEDULES, group="lr")
    _number(cfg, "lr.peak", 0, None, "a positive number (the peak learning rate)", low_open=True)
    _integer(cfg, "lr.warmup", 0, f"an integer >= 0 (warmup steps, at most train.steps={steps})")
    if lr_name in ("linear", "cosine", "two_stage"):
        _number(cfg, "lr.final_ratio", 0, 1, "a number in [0, 1] (final LR / peak LR)", default=0.0)
    if lr_name == "two_stage":
        _number(cfg, "lr.stage2_peak", 0, None, "a positive number (the stage-2 virtual peak LR)", low_open=True)
    wd_name = _choice(cfg, "wd.name", WD_SCHEDULES, group="wd")
    _number(cfg, "wd.value", 0, None, "a number >= 0 (weight decay)")
    if wd_name == "two_stage":
        _number(cfg, "wd.stage2_value", 0, None, "a number >= 0 (stage-2 weight decay)", default=0.0)
    if wd_name == "cosine":
        _number(cfg, "wd.final_value", 0, None, "a number >= 0 (final weight decay)", default=0.0)
    return _switch(cfg, "lr", steps), _switch(cfg, "wd", steps)


def _check_train_and_eval(cfg) -> None:
    steps = _positive(cfg, "train.steps")
    _positive(cfg, "train.batch_size")
    _number(cfg, "train.grad_clip", 0, None, "a positive number (max gradient norm) or null for no clipping",
            low_open=True, optional=True, default=None)
    _number(cfg, "train.label_smoothing", 0, 1, "a number in [0, 1)", high_open=True, default=0.0)
    every = _positive(cfg, "eval.every", "steps between evaluations")
    _positive(cfg, "eval.positions", "held-out positions scored")
    _positive(cfg, "eval.batch_size")
    if _get(cfg, "eval.generate", None) is not None:  # sample generations (bitnet.diagnostics)
        _integer(cfg, "eval.generate.every", 0, "an integer >= 0 (every Nth evaluation row; 0 = off)", default=0)
        _positive(cfg, "eval.generate.prompts", default=1)
        _positive(cfg, "eval.generate.new_tokens", default=1)
        _number(cfg, "eval.generate.temperature", 0, None, "a positive number", low_open=True, default=1.0)
        _seed(cfg, "eval.generate.seed", default=0)
        prompt = _positive(cfg, "eval.generate.prompt_tokens", default=1)
        seq_len = _get(cfg, "data.seq_len")
        if isinstance(seq_len, int) and 0 < seq_len < prompt:
            raise ConfigError(f"eval.generate.prompt_tokens={prompt}: longer than the model's context; allowed "
                              f"1..{seq_len} (data.seq_len={seq_len})")
    checkpoint_every = _integer(cfg, "train.checkpoint_every", 0,
                                f"an integer >= 0 (0 = no checkpoints) that is a multiple of eval.every={every}",
                                optional=True, default=0) or 0
    if checkpoint_every % every:
        raise ConfigError(f"train.checkpoint_every={checkpoint_every}: must be a multiple of eval.every={every} "
                          f"(checkpoints are taken at evaluation rows) or 0 for none")
    lr_switch, wd_switch = _check_schedules(cfg, steps)
    length = _run_length(cfg, steps, lr_switch, wd_switch)
    warmup = _get(cfg, "lr.warmup")
    if warmup > length:
        what = f"train.steps={steps}" if length == steps else f"the {length} steps that run (train.stage1_only)"
        raise ConfigError(f"lr.warmup={warmup}: longer than the run; allowed 0..{length} ({what})")


def _check_data_keys(cfg) -> None:
    from bitnet.data import CORPORA, TEXT_SUFFIXES, text_files

    name = _choice(cfg, "data.name", CORPORA, group="data")
    _integer(cfg, "data.vocab_size", 256, "an integer >= 256 (byte-level BPE starts from the 256 bytes)")
    _positive(cfg, "data.seq_len", "tokens per training window")
    _number(cfg, "data.val_fraction", 0, 0.5, "a number in (0, 0.5] (the held-out share of the corpus)",
            low_open=True)
    if name == "text":
        path = _get(cfg, "data.path", None)
        if path is None or str(path).strip() == "":
            raise ConfigError(f"data.path={_show(path)}: data=text needs data.path=<a text file or a folder of "
                              f"{'/'.join(TEXT_SUFFIXES)} files>")
        try:
            text_files(str(path))
        except (OSError, ValueError) as err:
            hint = "" if "files" in str(err) else f"; give a text file or a folder of {'/'.join(TEXT_SUFFIXES)} files"
            raise ConfigError(_first_line(err) + hint) from None


def _check_execution(cfg) -> None:
    _choice(cfg, "precision", PRECISIONS)
    _boolean(cfg, "compile", default=False)
    _boolean(cfg, "progress", default=True)
    _positive(cfg, "threads", "CPU threads", optional=True, default=None)
    _seed(cfg, "seed")
    device = _get(cfg, "device")
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"device={_show(device)}: expected auto, cpu, cuda or cuda:N")


# ---- 2. the machine ----------------------------------------------------------------------------------------
def _check_device(cfg) -> None:
    from bitnet.devices import assign_device

    try:
        assign_device(_get(cfg, "device"), job_num=0)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(_first_line(err)) from None


# ---- 3. the data -------------------------------------------------------------------------------------------
def _data_key(cfg) -> tuple:
    from bitnet.data import default_cache_dir

    d = cfg.data
    cache = d.get("cache_dir") or str(default_cache_dir())
    return (d.name, str(d.get("path")) if d.name == "text" else None, int(d.vocab_size), float(d.val_fraction),
            str(cache))


def split_sizes(cfg, cache: dict | None = None) -> tuple[int, int]:
    """(training tokens, held-out tokens) of the configured corpus, through the tokenizer cache."""
    from bitnet.data import load_corpus

    key = _data_key(cfg)
    if cache is not None and key in cache:
        return cache[key]
    d = cfg.data
    try:
        corpus = load_corpus(d.name, d.get("path"), int(d.vocab_size), float(d.val_fraction),
                             cache_dir=d.get("cache_dir"), log=lambda *_: None)
    except (OSError, ValueError) as err:
        raise ConfigError(_first_line(err)) from None
    except RuntimeError as err:  # e.g. a corpus too small to hold out a single block
        raise ConfigError(f"data.val_fraction={_show(d.val_fraction)}: no held-out split can be made from this "
                          f"corpus ({_corpus_tokens(cfg)}): {_first_line(err)}") from None
    sizes = (len(corpus.train_ids), len(corpus.val_ids))
    if cache is not None:
        cache[key] = sizes
    return sizes


def _corpus_tokens(cfg) -> str:
    from bitnet.data import cache_folder, read_corpus

    try:
        _, fingerprint = read_corpus(cfg.data.name, cfg.data.get("path"))
        info = cache_folder(fingerprint, int(cfg.data.vocab_size), cfg.data.get("cache_dir")) / "info.json"
        return f"{json.loads(info.read_text())['tokens']} tokens"
    except Exception:  # noqa: BLE001 - only decorates the message
        return "too few tokens"


def _check_data(cfg, cache: dict | None) -> None:
    from bitnet.data import max_eval_positions

    train_tokens, val_tokens = split_sizes(cfg, cache)
    seq_len, positions = int(cfg.data.seq_len), int(cfg.eval.positions)
    if train_tokens <= seq_len + 1:
        raise ConfigError(f"data.seq_len={seq_len}: the training split has only {train_tokens} tokens; "
                          f"allowed up to {max(train_tokens - 2, 0)}")
    room = max(0, max_eval_positions(range(val_tokens), seq_len))  # the rule of make_eval_set, on a length
    if room == 0:
        raise ConfigError(f"data.val_fraction={_show(cfg.data.val_fraction)}: the held-out split has only "
                          f"{val_tokens} tokens, too few for one window of data.seq_len={seq_len}; allowed: a "
                          f"larger data.val_fraction (at most 0.5), a smaller data.seq_len or a larger corpus")
    if positions > room:
        raise ConfigError(f"eval.positions={positions}: larger than the held-out split, which has room for "
                          f"1..{room} positions at data.seq_len={seq_len} ({val_tokens} held-out tokens, "
                          f"data.val_fraction={_show(cfg.data.val_fraction)})")


def validate(cfg: DictConfig, *, device: bool = True, data: bool = True, cache: dict | None = None) -> None:
    """Raise ConfigError (one line: key, bad value, what is allowed) at the first problem in `cfg`.

    device: also check that the device exists on this machine. data: also check the corpus and the held-out
    split (loads the corpus through the tokenizer cache). cache: a dict shared across calls (grid points) so
    that each distinct data config is loaded once.
    """
    from bitnet.devices import assign_device
    from bitnet.preflight import check_fits, results_folder

    results = results_folder(cfg)
    if "hydra" in cfg:  # a config from load_sweep_config: check the task's part
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    _check_execution(cfg)
    _check_model(cfg)
    _check_optim(cfg)
    _check_train_and_eval(cfg)
    _check_data_keys(cfg)
    if device:
        _check_device(cfg)
    if data:
        _check_data(cfg, cache)
    try:  # memory and disk, from the config's sizes (bitnet.preflight); after the data: the vocabulary is real
        check_fits(cfg, results, assign_device(cfg.device, job_num=0) if device else None)
    except ValueError as err:
        raise ConfigError(_first_line(err)) from None
