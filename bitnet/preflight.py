"""Will a grid point fit on this machine? Estimates, from the config alone (arithmetic: no model is built, no
memory is touched), of the memory a training step needs and of the disk its results take, checked before
anything is built or trained. `bitnet.validate` calls `check_fits`.

Memory, with B x T the batch shape (train.batch_size x data.seq_len), V the vocabulary, h the width, F the FFN
width and L the layers:

- weights: P = 2Vh (embedding and head) + L(4h^2 + 3hF) parameters (norm gains left out). Training keeps each
  in fp32 with its gradient and AdamW's two moments: 16 bytes per parameter;
- activations kept for the backward pass: the logits and their gradient (2 B T V fp32 values) and, per layer,
  the inputs of the attention and FFN projections (B T (4h + 3F) values; 2 bytes each under bf16 autocast,
  4 in fp32);
- evaluation: eval.batch_size x T x V fp32 logits, which exist only between training steps, so the larger of
  the two phases counts.

Everything left out (norm gains, quantized weight copies, attention internals, the allocator's slack) only
adds to the need, so the estimate is a lower bound: a refused point certainly does not fit, a passed one can
still run out of memory. It is compared with the machine's RAM (or the cgroup limit a scheduler set) on CPU,
and with the GPU's total memory on CUDA.

Disk: a run appends one metrics.csv row (about 100 bytes) and one layers.csv row per BitLinear (about 30 bytes)
at each of its train.steps / eval.every + 1 evaluations, and keeps up to two checkpoints (the last one and
the one being written) of 12 bytes per parameter (fp32 weights and AdamW moments). This is compared with the
free space where the results go.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from bitnet.config import RunConfig

ADAMW_TRAINING_BYTES = 16  # fp32 weight + gradient + two AdamW moments, per parameter
CHECKPOINT_BYTES = 12  # fp32 weight + two AdamW moments, per parameter
METRICS_ROW_BYTES = 100
LAYER_ROW_BYTES = 30
BITLINEARS_PER_LAYER = 7  # q, k, v, o and the FFN's gate, up, down


def _size(n: float) -> str:
    if n < 2**40:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**40:.3g} TiB"


def _shape(config: RunConfig) -> dict:
    model = config.model
    return {"V": model.vocab_size, "h": model.hidden, "L": model.layers, "F": model.ffn_width,
            "T": model.max_seq_len, "B": config.train.batch_size, "E": config.eval.batch_size}


def parameter_count(config: RunConfig) -> int:
    """The model's weight-matrix parameters (embedding, head and the BitLinear layers; norm gains left out)."""
    s = _shape(config)
    return 2 * s["V"] * s["h"] + s["L"] * (4 * s["h"] ** 2 + 3 * s["h"] * s["F"])


def memory_needed(config: RunConfig, device: torch.device) -> dict[str, int]:
    """Lower bounds, in bytes, of what one training step needs on `device`: weights (with gradients and AdamW
    state), training activations, and evaluation logits."""
    s = _shape(config)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    tokens = s["B"] * s["T"]
    return {"weights": ADAMW_TRAINING_BYTES * parameter_count(config),
            "activations": tokens * (2 * s["V"] * 4 + s["L"] * (4 * s["h"] + 3 * s["F"]) * (2 if bf16 else 4)),
            "evaluation": s["E"] * s["T"] * s["V"] * 4}


def memory_available(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) for `device`: the GPU's total memory, or the RAM this process may use."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return total, f"{device} has {_size(total)} in all"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a scheduler's limit (cgroup v2), e.g. SLURM's --mem
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and int(limit) < ram:
            return int(limit), f"this job may use {_size(int(limit))} (cgroup limit)"
    except OSError:
        pass
    return ram, f"this machine has {_size(ram)} of RAM"


def _width_key(config: RunConfig) -> str:
    """The key the user sets the width with: `hidden` (which model.hidden refers to) unless it is absent."""
    return "hidden" if "hidden" in config.resolved else "model.hidden"


def check_memory(config: RunConfig, device: torch.device) -> None:
    need = memory_needed(config, device)
    weights, activations = need["weights"], max(need["activations"], need["evaluation"])
    available, what = memory_available(device)
    if weights + activations <= available:
        return
    s = _shape(config)
    if weights >= activations:  # name the key behind the larger share of the weights
        vocabulary_part = 2 * s["V"] * s["h"]
        key = "data.vocab_size" if vocabulary_part > parameter_count(config) - vocabulary_part else (
            _width_key(config))
    else:
        key = "train.batch_size" if need["activations"] >= need["evaluation"] else "eval.batch_size"
    value = {"data.vocab_size": s["V"], "hidden": s["h"], "model.hidden": s["h"], "train.batch_size": s["B"],
             "eval.batch_size": s["E"]}[key]
    raise ValueError(f"{key}={value}: this point needs at least {_size(weights + activations)} of memory on "
                     f"{device.type} ({_size(weights)} for {parameter_count(config):.3g} parameters with gradients and "
                     f"AdamW state, {_size(activations)} of activations at batch {s['B']}x{s['T']}), but {what}; "
                     f"allowed: a smaller model (hidden, model.layers, data.vocab_size) or batch")


def disk_needed(config: RunConfig) -> dict[str, int]:
    """Estimates, in bytes, of the results a run writes: CSV rows and (up to two) checkpoints."""
    evaluations = config.train.steps // config.eval.every + 2
    bitlinears = BITLINEARS_PER_LAYER * config.model.layers + int(config.model.quantize_head)
    return {"rows": evaluations * (METRICS_ROW_BYTES + bitlinears * LAYER_ROW_BYTES),
            "checkpoints": 2 * CHECKPOINT_BYTES * parameter_count(config) if config.train.checkpoint_every else 0}


def check_writable(folder: Path) -> None:
    """ValueError (one line, the reason) when results cannot be written under `folder`: a file in the way, a
    read-only file system, a virtual one such as /proc (no disk blocks at all), or no permission. Said here
    rather than as Hydra's traceback when it fails to make the folder, or as "0.0 GiB free"."""
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    why = None
    if not existing.is_dir():
        why = f"{existing} is a file, not a folder"
    else:
        fs = os.statvfs(existing)
        if fs.f_flag & os.ST_RDONLY:
            why = f"{existing} is on a read-only file system"
        elif fs.f_blocks == 0:
            why = f"{existing} is on a virtual file system (such as /proc or /sys), not on a disk"
        elif not os.access(existing, os.W_OK | os.X_OK):
            why = f"no permission to write in {existing}"
    if why:
        raise ValueError(f"the output folder {path} cannot hold results: {why}; give another one (hydra.run.dir=... "
                         f"for a run, hydra.sweep.dir=... for a sweep)")


def check_disk(config: RunConfig, folder: Path) -> None:
    existing = Path(folder).expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    need = disk_needed(config)
    if sum(need.values()) <= free:
        return
    if need["rows"] >= need["checkpoints"]:
        steps, every = config.train.steps, config.eval.every
        raise ValueError(f"train.steps={steps}: the results would take about {_size(sum(need.values()))} on disk "
                         f"({steps // every + 1} evaluation rows at eval.every={every}), but {existing} has "
                         f"{_size(free)} free; allowed: fewer steps or a larger eval.every")
    raise ValueError(f"{_width_key(config)}={config.model.hidden}: two checkpoints of {parameter_count(config):.3g} "
                     f"parameters take "
                     f"about {_size(need['checkpoints'])}, but {existing} has {_size(free)} free; allowed: a "
                     f"smaller model, or train.checkpoint_every=0 (no resume)")


def results_folder(cfg) -> Path:
    """Where this config's results will be written: for a config that keeps its `hydra` node (a sweeper's grid
    point, a single run before it starts) the sweep or run folder; inside a Hydra job its output folder; else
    the working directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if "hydra" in cfg:
        multirun = OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
        return Path(str(OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir", default=".")))
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def check_fits(config: RunConfig, folder: Path, device: torch.device | None) -> None:
    """Raise ValueError (one line: the key that sets the size, the estimate, what is available) when a point
    cannot fit in memory on `device` (skipped when None: the device is on another machine) or on disk."""
    if device is not None:
        check_memory(config, device)
    check_writable(folder)
    check_disk(config, folder)
