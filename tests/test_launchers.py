"""Launchers: real two-point sweeps through submitit_local and joblib on CPU, the presets in
conf/hydra/launcher/, and the per-job device assignment of bitnet.devices."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from omegaconf import OmegaConf

from bitnet import devices
from bitnet.devices import JOBLIB_TARGET, assign_device, concurrent_jobs, cpu_threads, current_job_num

from tests.conftest import CONF_DIR, TINY, run_cli, run_main

# ---- real sweeps ----------------------------------------------------------------------------------------


def point_dirs(sweep_dir) -> dict[str, object]:
    """Point folders by their seed override (folders are named by every override of the point)."""
    points = {}
    for overrides in sweep_dir.glob("*/.hydra/overrides.yaml"):
        seed = next(o for o in OmegaConf.load(overrides) if o.startswith("seed="))
        points[seed] = overrides.parent.parent
    return points


def check_two_points(sweep_dir):
    points = point_dirs(sweep_dir)
    assert sorted(points) == ["seed=0", "seed=1"]
    for point in points.values():
        lines = (point / "metrics.csv").read_text().splitlines()
        assert lines[0].startswith("step,loss,unique_tokens")
        assert len(lines) >= 3  # header, step 0, at least one evaluation after training
        record = json.loads((point / "run.json").read_text())
        assert record["status"] == "completed"
        assert record["device"] == "cpu"


@pytest.mark.slow  # worker processes that each import torch and Hydra
def test_submitit_local_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", "seed=0,1", *TINY)
    check_two_points(sweep)
    assert (sweep / ".submitit").is_dir()  # it really went through submitit


@pytest.mark.slow  # worker processes that each import torch and Hydra
def test_joblib_sweep(tmp_path):
    """Through joblib, via our local_parallel preset (which composes the plugin's joblib config)."""
    sweep = tmp_path / "sweep"
    tiny_default_threads = [o for o in TINY if not o.startswith("threads=")] + ["threads=null"]
    run_cli("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
            "seed=0,1", *tiny_default_threads)
    check_two_points(sweep)
    cores = len(os.sched_getaffinity(0))
    for point in point_dirs(sweep).values():  # two jobs at once share the cores instead of oversubscribing
        assert json.loads((point / "run.json").read_text())["cpu_threads"] == max(1, cores // 2)
    hydra_cfg = OmegaConf.load(point_dirs(sweep)["seed=1"] / ".hydra" / "hydra.yaml")
    assert hydra_cfg.hydra.launcher._target_ == JOBLIB_TARGET
    assert hydra_cfg.hydra.job.num == 1


# ---- presets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, target, expected", [
    ("local_parallel", "JoblibLauncher", {"n_jobs": 2}),
    ("slurm", "SlurmLauncher", {"gpus_per_node": 1, "max_num_timeout": 5, "array_parallelism": 64}),
    ("local_submitit", "LocalLauncher", {"gpus_per_node": 0}),
])
def test_presets_compose_on_plugin_defaults(preset, target, expected):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(target)
    for key, value in expected.items():
        assert launcher[key] == value
    if preset == "slurm":
        assert launcher.max_num_timeout > 0  # timeouts are requeued, not lost
        raw = OmegaConf.to_container(launcher, resolve=False)
        assert raw["submitit_folder"].startswith("${hydra.sweep.dir}")  # plugin default kept, not copied


# ---- device assignment ------------------------------------------------------------------------------------


def test_cpu_only_machine_is_all_cpu():
    for job in range(5):
        assert assign_device("auto", job, n_gpus=0) == torch.device("cpu")
        assert assign_device("cpu", job, n_gpus=0) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        assign_device("cuda", 0, n_gpus=0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        assign_device("cuda:1", 0, n_gpus=0)


def test_one_point_per_gpu_round_robin():
    assert [assign_device("auto", j, n_gpus=4).index for j in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [assign_device("cuda", j, n_gpus=2).index for j in range(4)] == [0, 1, 0, 1]


def test_several_points_per_gpu():
    """n_jobs = 3 * GPUs: any 6 consecutive job numbers (the jobs in flight) put 3 on each of 2 GPUs."""
    for first in range(10):
        indices = [assign_device("auto", j, n_gpus=2).index for j in range(first, first + 6)]
        assert indices.count(0) == indices.count(1) == 3


def test_pinned_and_cpu_devices_are_kept():
    assert assign_device("cuda:1", 7, n_gpus=2) == torch.device("cuda", 1)
    assert assign_device("cpu", 3, n_gpus=8) == torch.device("cpu")
    with pytest.raises(ValueError, match="only 2 GPU"):
        assign_device("cuda:2", 0, n_gpus=2)
    with pytest.raises(ValueError, match="expected auto, cpu"):
        assign_device("gpu0", 0, n_gpus=1)


def test_outside_hydra_is_job_zero():
    assert current_job_num() == 0
    assert concurrent_jobs() == 1
    assert assign_device("auto", n_gpus=3) == torch.device("cuda", 0)


def fake_hydra(monkeypatch, **hydra):
    monkeypatch.setattr(devices, "_hydra_config", lambda: OmegaConf.create(hydra))


def test_job_number_comes_from_hydra(monkeypatch):
    fake_hydra(monkeypatch, job={"num": 5}, launcher={"_target_": "x"})
    assert current_job_num() == 5
    assert assign_device("auto", n_gpus=2) == torch.device("cuda", 1)
    fake_hydra(monkeypatch, job={"num": "???"}, launcher={})  # a single run: hydra.job.num is missing
    assert current_job_num() == 0


def test_cpu_threads_split_between_joblib_jobs(monkeypatch):
    assert cpu_threads(3) == 3
    fake_hydra(monkeypatch, job={"num": 0}, launcher={"_target_": JOBLIB_TARGET, "n_jobs": 2})
    assert concurrent_jobs(cores=8) == 2
    fake_hydra(monkeypatch, job={"num": 0}, launcher={"_target_": JOBLIB_TARGET, "n_jobs": -1})
    assert concurrent_jobs(cores=8) == 8
    fake_hydra(monkeypatch, job={"num": 0}, launcher={"_target_": JOBLIB_TARGET, "n_jobs": -2})
    assert concurrent_jobs(cores=8) == 7
    fake_hydra(monkeypatch, job={"num": 0}, launcher={"_target_": JOBLIB_TARGET, "n_jobs": 64})
    assert cpu_threads() == 1  # never below one thread
    fake_hydra(monkeypatch, job={"num": 0}, launcher={"_target_": "hydra._internal.core_plugins.basic_launcher"})
    assert concurrent_jobs(cores=8) == 1


def test_cpu_threads_split_between_submitit_local_jobs(monkeypatch, tmp_path):
    """submitit's local executor starts every point at once: the cores are split between all of them."""
    (tmp_path / "grid.json").write_text(json.dumps({"points": [{"overrides": [f"seed={i}"], "folder": f"seed={i}"}
                                                               for i in range(3)]}))
    fake_hydra(monkeypatch, job={"num": 0}, sweep={"dir": str(tmp_path)},
               launcher={"_target_": devices.SUBMITIT_LOCAL_TARGET})
    assert concurrent_jobs(cores=8) == 3
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    assert cpu_threads() == 2


@pytest.mark.parametrize("settings, start", [
    (["lr.peak=interval(0.001,0.002)"], "error: lr.peak=interval(0.001,0.002): this sweeper takes lists (a,b,c), "
                                        "range() and choice()"),
    (["hidden=32,48", "hydra.sweeper.max_batch_size=0"], "error: hydra.sweeper.max_batch_size=0: must be a positive "
                                                         "integer"),
    (["hidden=32,48", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=0"],
     "error: hydra.launcher.n_jobs=0: must be a number of jobs at once"),
    (["hidden=32,48", "hydra/launcher=slurm"], "error: hydra/launcher=slurm: SLURM is not available on this machine"),
])
def test_sweep_settings_hydra_would_fail_on_are_one_line(tmp_path, settings, start):
    """Each once ended in a traceback (the slurm case after writing grid.json); now one line, exit 2, and no
    sweep folder. The slurm case runs with a PATH that has no sbatch or srun."""
    sweep_dir = tmp_path / "sweep"
    env = {"PATH": os.path.dirname(sys.executable)} if "hydra/launcher=slurm" in settings else None
    result = run_main("-m", *TINY, *settings, f"hydra.sweep.dir={sweep_dir}", check=False, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert not sweep_dir.exists()
