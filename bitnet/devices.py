"""Which device a grid point trains on: the per-job device assignment of local parallel sweeps.

Hydra's launchers start jobs but assign no GPUs (hydra#3002): joblib workers all see every GPU, and
submitit_local gives every job the same `CUDA_VISIBLE_DEVICES` (hydra#2757), so without help every point
lands on GPU 0. The rule here, applied to the `device` setting:

    device    no GPU visible   G GPUs visible
    auto      cpu              cuda:(job_num % G)
    cuda      error            cuda:(job_num % G)
    cuda:N    error            cuda:N (pinned; N must be < G)
    cpu       cpu              cpu
    mps, xpu  as given when this torch build and machine have it, else error
    other     error (meta, xla, ...: torch parses the name but a run cannot train there)

`job_num` is `hydra.job.num` in a multirun (0 for a single run or outside Hydra); G counts the GPUs this
process can see (`CUDA_VISIBLE_DEVICES` respected). Round robin by job number gives:
- one point per GPU on a G-GPU box: joblib with `n_jobs=G`; jobs j, j+1, ..., j+G-1 run together and sit on
  G different GPUs;
- k points per GPU: `n_jobs=k*G`; the jobs in flight are (nearly) consecutive numbers, so each GPU holds k;
- SLURM (submitit_slurm, one GPU per task): each job sees one GPU, so everything is cuda:0 of its own node
  slot, which is what the scheduler granted.
The sequential (basic) launcher runs one job at a time; round robin then just alternates GPUs, which costs
nothing. How many points run at once is the launcher's business (`hydra.launcher.n_jobs`), not this module's.

On CPU, concurrent jobs share the cores: `cpu_threads` gives each job cores // concurrent jobs threads when
`threads` is unset and the launcher is joblib or submitit's local executor, instead of every job taking every
core.
"""

from __future__ import annotations

import os

import torch

from bitnet.keys import show

JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
# Accelerators besides CUDA that a run may name explicitly, each with its availability test. Anything else
# torch.device() parses (meta, xla, hpu, ...) has no tensors to train on or needs a backend this tool lacks.
OTHER_ACCELERATORS = {
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def _hydra_config():
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    return HydraConfig.get() if HydraConfig.initialized() else None


def current_job_num() -> int:
    """`hydra.job.num` inside a Hydra multirun job; 0 for a single run or outside Hydra."""
    hydra_cfg = _hydra_config()
    if hydra_cfg is None:
        return 0
    from omegaconf import OmegaConf

    if "num" not in hydra_cfg.job or OmegaConf.is_missing(hydra_cfg.job, "num") or hydra_cfg.job.num is None:
        return 0
    return int(hydra_cfg.job.num)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_device(name) -> torch.device | None:
    """The `device` setting as a torch device, None for `auto`; ValueError when it names no device type."""
    if isinstance(name, str) and name.strip():
        if name.strip() == "auto":
            return None
        try:
            return torch.device(name.strip())
        except RuntimeError:
            pass
    raise ValueError(f"device={show(name)}: expected auto, cpu, cuda or cuda:N")


def assign_device(name: str, job_num: int | None = None, n_gpus: int | None = None) -> torch.device:
    """The device of job `job_num` (default: this Hydra job's number) given `n_gpus` visible GPUs (default:
    counted). See the module docstring for the rule."""
    device, name = parse_device(name), str(name).strip()
    job_num = current_job_num() if job_num is None else int(job_num)
    n_gpus = visible_gpus() if n_gpus is None else int(n_gpus)
    if job_num < 0:
        raise ValueError(f"job number {job_num} must be >= 0")
    if device is None:
        return torch.device("cuda", job_num % n_gpus) if n_gpus else torch.device("cpu")
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type in OTHER_ACCELERATORS:
        if not OTHER_ACCELERATORS[device.type]():
            raise ValueError(f"device={name}: not available with this build of torch on this machine; expected "
                             f"auto, cpu, cuda or cuda:N")
        return device  # used as given
    if device.type != "cuda":  # meta, xla, hpu...: torch knows the name, but it cannot train a model here
        raise ValueError(f"device={name}: not a device this tool can train on; expected auto, cpu, cuda or cuda:N"
                         f" ({', '.join(OTHER_ACCELERATORS)} where this torch build supports them)")
    if not n_gpus:
        raise ValueError(f"device={name}: CUDA is not available on this machine (use device=auto or cpu)")
    if device.index is None:
        return torch.device("cuda", job_num % n_gpus)
    if device.index >= n_gpus:
        raise ValueError(f"device={name}: only {n_gpus} GPU(s) visible (cuda:0..cuda:{n_gpus - 1})")
    return device


def concurrent_jobs(cores: int | None = None) -> int:
    """How many jobs of this sweep run at once on this machine, as far as the launcher config says: joblib's
    `n_jobs` (negative values counted from the core count, as joblib does); every point of the grid for
    submitit's local executor, which starts them all at once; 1 otherwise."""
    hydra_cfg = _hydra_config()
    if hydra_cfg is None:
        return 1
    launcher = hydra_cfg.get("launcher") or {}
    if launcher.get("_target_") == SUBMITIT_LOCAL_TARGET:
        from pathlib import Path

        from bitnet.progress import grid_folders

        return max(1, len(grid_folders(Path(hydra_cfg.sweep.dir))))
    if launcher.get("_target_") != JOBLIB_TARGET:
        return 1
    cores = cores or os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs")
    n_jobs = -1 if n_jobs is None else int(n_jobs)
    if n_jobs < 0:
        n_jobs = cores + 1 + n_jobs
    return max(1, n_jobs)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(requested: int | None = None) -> int:
    """Torch threads for a CPU job: `requested` when set, else the cores this process may use divided among
    the jobs running at once (at least 1)."""
    if requested:
        return int(requested)
    cores = usable_cores()
    return max(1, cores // concurrent_jobs(cores))
