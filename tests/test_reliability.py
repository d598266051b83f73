"""Reliability: a killed run resumes to the same CSV, a finished sweep retrains nothing, a diverged or failed
point stays contained, torn CSV lines are dropped, and a submitit requeue resumes from the checkpoint.

Every test here runs real trainings (tiny, CPU) in subprocesses, as a user would."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bitnet.records import MetricsCSV
from tests.conftest import REPO_ROOT, TINY, run_cli

TIMING_COLUMNS = {"elapsed_s"}


@pytest.fixture(scope="module", autouse=True)
def tokenizer_cached(private_tokenizer_cache):
    """Train the tiny runs' tokenizer once, up front, instead of in two concurrent subprocesses."""
    from bitnet.data import load_corpus

    load_corpus("kjv", None, 512, 0.05, log=lambda *_: None)


def tiny(*changes: str) -> list[str]:
    """TINY with some keys replaced (Hydra would take the last of duplicated keys; this keeps them unique)."""
    keys = {c.split("=", 1)[0] for c in changes}
    return [o for o in TINY if o.split("=", 1)[0] not in keys] + list(changes)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def points(sweep_dir: Path, key: str) -> dict[str, Path]:
    """Point folders of a sweep by the value of one swept override."""
    found = {}
    for overrides in sweep_dir.glob("*/.hydra/overrides.yaml"):
        value = next(o for o in OmegaConf.load(overrides) if o.startswith(f"{key}="))
        found[value.split("=", 1)[1]] = overrides.parent.parent
    return found


def wait_for_rows(csv_path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if csv_path.exists() and csv_path.read_text().count("\n") >= n + 1:  # header + n rows
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before writing {n} rows")
        time.sleep(0.005)
    raise AssertionError(f"no {n} rows in {csv_path} after {timeout}s")


# ---- (a) SIGKILL part-way, rerun, compare with an uninterrupted run ---------------------------------------
KILLABLE = tiny("train.steps=80", "eval.every=10", "train.checkpoint_every=20")


def test_sigkilled_run_resumes_to_the_uninterrupted_csv(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    command = [sys.executable, "-m", "bitnet.run", *KILLABLE]
    # The uninterrupted run goes alongside (threads=1 each, so both fit on 2 cores).
    ref_proc = subprocess.Popen([*command, f"hydra.run.dir={reference}"], cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen([*command, f"hydra.run.dir={killed}"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_rows(killed / "metrics.csv", 5, proc)  # steps 0..40: at least one checkpoint (step 20)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert record(killed)["status"] == "running"
    assert (killed / "checkpoint.pt").exists()
    partial = rows(killed / "metrics.csv")
    assert 5 <= len(partial) < 9, "killed too late to test anything"
    # What a crash in the middle of a write would leave: a torn last line.
    with open(killed / "metrics.csv", "a") as handle:
        handle.write("90,4.87,7,4.8")

    rerun = run_cli(*KILLABLE, f"hydra.run.dir={killed}")
    resumed_at = int(rerun.stdout.split("Resuming from the checkpoint at step ")[1].split()[0])
    assert 20 <= resumed_at <= int(partial[-1]["step"]), rerun.stdout
    assert ref_proc.wait(timeout=300) == 0, ref_proc.stderr.read()

    assert record(killed)["status"] == record(reference)["status"] == "completed"
    assert not (killed / "checkpoint.pt").exists()
    resumed, uninterrupted = rows(killed / "metrics.csv"), rows(reference / "metrics.csv")
    assert [r["step"] for r in resumed] == [str(s) for s in range(0, 81, 10)]  # no duplicated or missing row
    assert resumed == uninterrupted  # value for value (elapsed_s aside)
    assert rows(killed / "layers.csv") == rows(reference / "layers.csv")


# ---- (b), (c) a two-point sweep with one diverging point; rerunning it retrains nothing --------------------
# stage2_peak=1e30 from step 12 on: an absurd LR that overflows the activations to inf/NaN on CPU, after the
# step-10 row was written. The other point uses the ordinary stage-2 peak.
DIVERGING = [*tiny("lr=two_stage", "lr.switch_step=12"), "lr.stage2_peak=1e-3,1e30"]


@pytest.fixture(scope="module")
def diverged_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("diverged-sweep")
    result = run_cli("-m", *DIVERGING, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir, result


def test_divergence_stops_only_its_point(diverged_sweep):
    sweep_dir, result = diverged_sweep
    found = {float(value): folder for value, folder in points(sweep_dir, "lr.stage2_peak").items()}
    assert sorted(found) == [1e-3, 1e30]
    healthy, diverged = found[1e-3], found[1e30]
    assert record(healthy)["status"] == "completed"
    assert [r["step"] for r in rows(healthy / "metrics.csv")] == ["0", "10", "20"]
    assert all(r["loss"] and r["eval_loss"] for r in rows(healthy / "metrics.csv")[1:])

    info = record(diverged)
    assert info["status"] == "diverged"
    assert 13 <= info["diverged_step"] <= 20, info  # the first update with the absurd LR is the 13th
    assert "NaN or infinite" in info["error"]
    assert [r["step"] for r in rows(diverged / "metrics.csv")] == ["0", "10"]  # rows before it are kept
    assert f"diverged at step {info['diverged_step']}" in result.stdout


def snapshot(sweep_dir: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and content of every result file (Hydra's own .hydra/ and run.log are rewritten by any launch)."""
    files = [p for p in sweep_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.name != "run.log"
             and p.name != "multirun.yaml"]
    return {str(p.relative_to(sweep_dir)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_rerunning_a_finished_sweep_retrains_nothing(diverged_sweep):
    sweep_dir, _ = diverged_sweep
    before = snapshot(sweep_dir)
    assert sum(name.endswith("metrics.csv") for name in before) == 2
    result = run_cli("-m", *DIVERGING, f"hydra.sweep.dir={sweep_dir}")
    assert result.stdout.count("(skipped)") == 2, result.stdout
    assert "Already completed at step 20" in result.stdout and "Already diverged at step" in result.stdout
    assert "Resuming" not in result.stdout
    assert snapshot(sweep_dir) == before


# ---- (d) an exception in one point loses no other point's results -------------------------------------------
@pytest.mark.slow
def test_a_failing_point_does_not_stop_the_sweep(tmp_path):
    """A corrupt checkpoint (what a dying disk leaves) makes one point raise. With one point per batch, Hydra's
    basic sweeper would skip the later batches; the validating sweeper runs them, then exits non-zero."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *tiny(), "seed=0,1", "hydra.sweeper.max_batch_size=1", f"hydra.sweep.dir={sweep_dir}"]
    # The point folders are deterministic and named by the swept key: plant a corrupt checkpoint in the first.
    first = sweep_dir / "seed=0"
    first.mkdir(parents=True)
    (first / "checkpoint.pt").write_bytes(b"not a checkpoint")

    result = run_cli(*args, check=False)
    assert result.returncode != 0
    found = points(sweep_dir, "seed")
    assert found["0"] == first, "the folder naming changed; update this test"
    assert record(first)["status"] == "failed" and "UnpicklingError" in record(first)["error"], record(first)
    assert record(found["1"])["status"] == "completed"  # the later batch ran
    assert [r["step"] for r in rows(found["1"] / "metrics.csv")] == ["0", "10", "20"]
    assert "1 of 2 grid points failed" in result.stdout + result.stderr



# ---- (e) torn lines -----------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_truncate_after_drops_a_torn_last_line_and_later_rows(tmp_path):
    path = write(tmp_path / "m.csv", "step,loss\n0,\n10,5.1\n20,4.9\n30,4.")
    assert MetricsCSV.truncate_after(path, 20) == 3
    assert path.read_text() == "step,loss\n0,\n10,5.1\n20,4.9\n"
    assert MetricsCSV.truncate_after(path, 10) == 2
    assert path.read_text() == "step,loss\n0,\n10,5.1\n"
    # Appending after a truncation continues the same file without a second header.
    with MetricsCSV(path, ["step", "loss"]) as out:
        out.write({"step": 20, "loss": 4.75})
    assert path.read_text() == "step,loss\n0,\n10,5.1\n20,4.75\n"


def test_truncate_after_edge_cases(tmp_path):
    torn_step = write(tmp_path / "a.csv", "step,loss\n0,\n1")  # torn inside the step number itself
    assert MetricsCSV.truncate_after(torn_step, 100) == 1 and torn_step.read_text() == "step,loss\n0,\n"
    torn_header = write(tmp_path / "b.csv", "step,lo")
    assert MetricsCSV.truncate_after(torn_header, 100) == 0 and torn_header.read_text() == ""
    with MetricsCSV(torn_header, ["step", "loss"]) as out:  # an emptied file gets its header back
        out.write({"step": 0, "loss": None})
    assert torn_header.read_text() == "step,loss\n0,\n"
    assert MetricsCSV.truncate_after(tmp_path / "missing.csv", 10) == 0
    per_layer = write(tmp_path / "c.csv", "step,layer\n0,a\n0,b\n10,a\n10,b\n20,a\n")
    assert MetricsCSV.truncate_after(per_layer, 10) == 4  # every row of a step, as in layers.csv


def test_rows_are_written_whole(tmp_path):
    """Each row is one write, flushed: a reader sees complete lines while the writer is open."""
    path = tmp_path / "m.csv"
    out = MetricsCSV(path, ["step", "loss", "note"])
    out.write({"step": 0, "loss": float("nan"), "note": "a,b"})
    assert path.read_text() == 'step,loss,note\n0,,"a,b"\n'
    with pytest.raises(KeyError):
        out.write({"step": 1, "bogus": 1})
    out.close()


# ---- SLURM-style requeue through submitit -------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_requeue_resumes_from_the_checkpoint(tmp_path):
    """Preempt a submitit_local job with SIGUSR2 (what SLURM sends): submitit calls the launcher's checkpoint(),
    requeues the same job in the same folder, and the run resumes from its checkpoint to the same CSV."""
    psutil = pytest.importorskip("psutil")
    sweep_dir, reference = tmp_path / "sweep", tmp_path / "reference"
    ref = subprocess.Popen([sys.executable, "-m", "bitnet.run", *KILLABLE, f"hydra.run.dir={reference}"],
                           cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep = subprocess.Popen([sys.executable, "-m", "bitnet.run", "-m", *KILLABLE, "seed=0",
                              "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}"],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(sweep_dir.glob("*/metrics.csv")):
            assert time.monotonic() < deadline and sweep.poll() is None
            time.sleep(0.01)
        wait_for_rows(next(sweep_dir.glob("*/metrics.csv")), 5, sweep)
        tasks = [p for p in psutil.Process(sweep.pid).children(recursive=True)
                 if "submitit.core._submit" in " ".join(p.cmdline())]
        assert len(tasks) == 1
        tasks[0].send_signal(signal.SIGUSR2)
        output, _ = sweep.communicate(timeout=300)
    finally:
        for proc in (sweep, ref):
            if proc.poll() is None:
                proc.kill()
    assert sweep.returncode == 0, output
    assert ref.wait(timeout=300) == 0
    point = next(sweep_dir.glob("*/metrics.csv")).parent
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*.out"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert "Resuming from the checkpoint at step" in logs
    assert record(point)["status"] == "completed"
    assert rows(point / "metrics.csv") == rows(reference / "metrics.csv")


class SignalMidWrite:
    """A file whose third write is interrupted by a preemption signal, as SLURM's can land at any moment."""

    def __init__(self, handle, signum):
        self.handle, self.signum, self.writes = handle, signum, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            signal.raise_signal(self.signum)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_preemption_during_a_checkpoint_write_exits_cleanly_and_resumes(tmp_path, monkeypatch):
    """submitit's handler exits from inside whatever runs. Inside torch.save that exit used to turn into
    "unexpected pos" RuntimeError (the job failed instead of being requeued, seen in CI): the signal now waits
    until the checkpoint is on disk, then exits the job as submitit intends."""
    import torch
    from hydra import compose, initialize_config_dir

    from bitnet.train import Run
    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=tiny("train.steps=20", "train.checkpoint_every=10"))
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, handle: real_save(obj, SignalMidWrite(handle, signal.SIGUSR2)))
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: sys.exit(3))  # what submitit's handler does
    try:
        with pytest.raises(SystemExit) as exited:
            Run(cfg, tmp_path).run()
    finally:
        signal.signal(signal.SIGUSR2, previous)
        monkeypatch.undo()
    assert exited.value.code == 3
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 10  # whole and readable
    assert not list(tmp_path.glob(".*.tmp"))
    assert [r["step"] for r in rows(tmp_path / "metrics.csv")] == ["0", "10"]

    resumed = Run(cfg, tmp_path).run()  # the requeued job
    assert resumed["status"] == "completed" and resumed["step"] == 20
    assert [r["step"] for r in rows(tmp_path / "metrics.csv")] == ["0", "10", "20"]
