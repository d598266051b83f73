"""Reliability: a killed run resumes to the same CSV, a finished sweep retrains nothing, a diverged or failed
point stays contained, torn CSV lines are dropped, a submitit requeue resumes from the checkpoint, two launches
of one sweep train each point once, Ctrl-C/SIGTERM leave a resumable point, and damaged checkpoints, caches
and temporary files are recovered from.

Every test here runs real trainings (tiny, CPU) in subprocesses, as a user would."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bitnet.records import MetricsCSV
from tests.conftest import REPO_ROOT, TINY, run_main

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


@pytest.mark.slow  # several training processes at once, signals between them
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

    rerun = run_main(*KILLABLE, f"hydra.run.dir={killed}")
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
    result = run_main("-m", *DIVERGING, f"hydra.sweep.dir={sweep_dir}")
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


def test_a_sweep_says_which_point_runs_and_ends_with_where_and_what_next(diverged_sweep):
    sweep_dir, result = diverged_sweep
    out = result.stdout
    found = {float(value): folder for value, folder in points(sweep_dir, "lr.stage2_peak").items()}
    assert f"point 1 of 2 ({found[1e-3].name})\n" in out  # nothing finished yet: no ETA
    # the second point's ETA comes from the first one's training time
    first = record(found[1e-3])["elapsed_s"]
    assert re.search(rf"point 2 of 2 \({re.escape(found[1e30].name)}\); about {first:.0f} s left \(1 point\(s\) to "
                     rf"go x {first:.0f} s, the mean training time of the 1 finished\)", out), out
    summary = out[out.index("sweep finished"):].splitlines()
    assert summary[0].startswith("sweep finished, 2 point(s): 1 completed, 1 diverged, 0 failed, 0 interrupted, "
                                 "0 skipped"), summary
    assert summary[1] == f"results: {sweep_dir.resolve()}"
    assert summary[2] == f"analyse it: python -m analysis tables {sweep_dir.resolve()}"
    assert summary[3] == f"diagnose each run (is it collapsing, and why?): bitnet-diagnose {sweep_dir.resolve()}"
    command = shlex.split(summary[2].split(": ", 1)[1])
    analysis = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=300)
    assert analysis.returncode == 0 and (sweep_dir / "analysis" / "tables.md").exists(), analysis.stderr


def snapshot(sweep_dir: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and content of every result file (Hydra's own .hydra/ and run.log are rewritten by any launch)."""
    files = [p for p in sweep_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.name != "run.log"
             and p.name != "multirun.yaml"]
    return {str(p.relative_to(sweep_dir)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_rerunning_a_finished_sweep_retrains_nothing(diverged_sweep):
    sweep_dir, _ = diverged_sweep
    before = snapshot(sweep_dir)
    assert sum(name.endswith("metrics.csv") for name in before) == 2
    result = run_main("-m", *DIVERGING, f"hydra.sweep.dir={sweep_dir}")
    assert result.stdout.count("(skipped)") == 2, result.stdout
    diverged_step = {float(v): record(f) for v, f in points(sweep_dir, "lr.stage2_peak").items()}[1e30]["diverged_step"]
    assert "Already completed at step 20" in result.stdout
    assert f"Already diverged at step {diverged_step}:" in result.stdout  # the step every other message gives
    assert "Resuming" not in result.stdout
    assert "2 point(s): 0 completed, 0 diverged, 0 failed, 0 interrupted, 2 skipped" in result.stdout
    assert snapshot(sweep_dir) == before


# ---- (d) an exception in one point loses no other point's results -------------------------------------------
@pytest.mark.slow
def test_a_failing_point_does_not_stop_the_sweep(tmp_path):
    """A folder where layers.csv cannot be written (here a directory has its name) makes one point raise. With
    one point per batch, Hydra's basic sweeper would skip the later batches; the validating sweeper runs them,
    then exits non-zero."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *tiny(), "seed=0,1", "hydra.sweeper.max_batch_size=1", f"hydra.sweep.dir={sweep_dir}"]
    # The point folders are deterministic and named by the swept key: break the first one.
    first = sweep_dir / "seed=0"
    (first / "layers.csv").mkdir(parents=True)

    result = run_main(*args, check=False)
    assert result.returncode != 0
    found = points(sweep_dir, "seed")
    assert found["0"] == first, "the folder naming changed; update this test"
    assert record(first)["status"] == "failed" and "IsADirectoryError" in record(first)["error"], record(first)
    assert record(found["1"])["status"] == "completed"  # the later batch ran
    assert [r["step"] for r in rows(found["1"] / "metrics.csv")] == ["0", "10", "20"]
    assert "1 of 2 grid points failed" in result.stdout + result.stderr
    assert "2 point(s): 1 completed, 0 diverged, 1 failed, 0 interrupted, 0 skipped" in result.stdout



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


# ---- two launches of one sweep at once ----------------------------------------------------------------------
@pytest.mark.slow  # several training processes at once, signals between them
def test_two_launches_of_one_sweep_train_each_point_once(tmp_path):
    """The same two-point sweep started twice at once into one folder (a user who relaunches while the first
    launch still runs): each point's lock lets one launcher train it; the other says so and moves on."""
    sweep_dir, reference = tmp_path / "sweep", tmp_path / "reference"
    args = ["-m", *tiny("train.steps=60"), "seed=0,1"]

    def launch(folder: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bitnet.run", *args, f"hydra.sweep.dir={folder}"],
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    launches = [launch(sweep_dir), launch(sweep_dir), launch(reference)]
    outputs = [proc.communicate(timeout=600) for proc in launches]
    for proc, (out, err) in zip(launches, outputs):
        assert proc.returncode == 0, out + err
    both = outputs[0][0] + outputs[1][0]
    assert both.count("Training from step 0") == 2, both  # each point trained once, by one of the two
    assert "Resuming" not in both
    assert both.count("Another process is training this point now") + both.count("(skipped)") == 2, both
    for seed in ("0", "1"):
        point, alone = points(sweep_dir, "seed")[seed], points(reference, "seed")[seed]
        assert record(point)["status"] == "completed"
        assert rows(point / "metrics.csv") == rows(alone / "metrics.csv")
        assert rows(point / "layers.csv") == rows(alone / "layers.csv")
    assert not list(sweep_dir.rglob("*.tmp"))


# ---- Ctrl-C and SIGTERM ---------------------------------------------------------------------------------------
@pytest.mark.slow  # several training processes at once, signals between them
def test_a_stopped_run_is_recorded_interrupted_and_resumes(tmp_path):
    """Ctrl-C (SIGINT) and SIGTERM, each sent to its own run (both at once, to save time): one line, exit
    130 / 143, status `interrupted`, and the command that resumes; that command resumes to the end. The Ctrl-C
    run writes to the default folder, named by the time of day, which the printed command pins."""
    stops = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def start(command: list[str], cwd: Path) -> subprocess.Popen:
        # Started from a shell in the background, a process inherits SIGINT ignored; a terminal's Ctrl-C is not.
        return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    given = tmp_path / "SIGTERM" / "given"

    def folder_of(signum: int) -> Path:
        if signum == signal.SIGTERM:
            return given
        found = list((tmp_path / "SIGINT").glob("outputs/*/*/metrics.csv"))
        return found[0].parent if found else tmp_path / "not yet"
    commands = {signal.SIGINT: [sys.executable, "-m", "bitnet.run", *KILLABLE],
                signal.SIGTERM: [sys.executable, "-m", "bitnet.run", *KILLABLE, f"hydra.run.dir={given}"]}
    for signum in stops:
        (tmp_path / signal.Signals(signum).name).mkdir()
    procs = {signum: start(command, tmp_path / signal.Signals(signum).name) for signum, command in commands.items()}
    try:
        for signum, proc in procs.items():
            deadline = time.monotonic() + 300  # the folder appears with the step-0 row, after the setup
            while not folder_of(signum).exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            wait_for_rows(folder_of(signum) / "metrics.csv", 4, proc)  # past the step-20 checkpoint
            proc.send_signal(signum)
        errors = {signum: proc.communicate(timeout=60)[1] for signum, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    folders = {signal.SIGINT: folder_of(signal.SIGINT), signal.SIGTERM: given}
    resumes = {}
    for signum, code in stops.items():
        name, err = signal.Signals(signum).name, errors[signum]
        assert procs[signum].returncode == code, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"interrupted by {name} at step "), err
        assert f": {folders[signum].resolve()} is recorded as interrupted; to resume from its last checkpoint, run: " \
               "python -m bitnet.run " in lines[0]
        resume = shlex.split(lines[0].split(", run: ", 1)[1])
        assert resume[-1] == f"hydra.run.dir={folders[signum].resolve()}" and resume[3:-1] == KILLABLE, resume
        resumes[signum] = [sys.executable, *resume[1:]]
        info = record(folders[signum])
        assert info["status"] == "interrupted" and info["error"] == f"stopped by {name}", info

    reruns = {signum: start(command, tmp_path / signal.Signals(signum).name) for signum, command in resumes.items()}
    for signum, proc in reruns.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Resuming from the checkpoint at step" in out
        assert record(folders[signum])["status"] == "completed"
        assert [r["step"] for r in rows(folders[signum] / "metrics.csv")] == [str(s) for s in range(0, 81, 10)]
    assert len(list((tmp_path / "SIGINT").glob("outputs/*/*"))) == 1  # resumed in place, no new folder


# ---- in-process runs: damaged folders ------------------------------------------------------------------------
def compose_tiny(*changes: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=tiny(*changes))


@pytest.fixture(scope="module")
def finished_tiny(tmp_path_factory):
    """One finished TINY run (checkpoint every 10 steps), to compare with and to copy."""
    from bitnet.train import Run

    folder = tmp_path_factory.mktemp("finished")
    Run(compose_tiny("train.checkpoint_every=10"), folder).run()
    return folder


def torn_zip(path: Path) -> bytes:
    """A real checkpoint cut short, as a copy interrupted half-way leaves it."""
    import torch

    torch.save({"step": 10, "model": {"w": torch.zeros(1000)}}, path)
    return path.read_bytes()[: path.stat().st_size // 2]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "incomplete"])
def test_an_unreadable_checkpoint_is_set_aside_and_the_point_starts_over(tmp_path, finished_tiny, damage, caplog):
    import torch

    from bitnet.train import Run

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"status": "running", "step": 10}))
    (folder / "metrics.csv").write_text((finished_tiny / "metrics.csv").read_text().split("\n", 2)[0] + "\n")
    content = {"garbage": lambda: b"not a checkpoint",
               "truncated": lambda: torn_zip(tmp_path / "whole.pt"),
               "incomplete": lambda: (torch.save({"step": 10}, tmp_path / "partial.pt"),
                                      (tmp_path / "partial.pt").read_bytes())[1]}[damage]()
    (folder / "checkpoint.pt").write_bytes(content)

    with caplog.at_level("WARNING", logger="bitnet"):
        result = Run(compose_tiny("train.checkpoint_every=10"), folder).run()
    assert result["status"] == "completed"
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1 and "set aside as checkpoint.pt.corrupt, the point starts over from step 0" in warning[0]
    assert (folder / "checkpoint.pt.corrupt").read_bytes() == content
    assert rows(folder / "metrics.csv") == rows(finished_tiny / "metrics.csv")  # a clean start, same numbers
    assert rows(folder / "layers.csv") == rows(finished_tiny / "layers.csv")


def test_a_finished_points_torn_last_row_is_cut_off(tmp_path, finished_tiny, caplog):
    import shutil

    from bitnet.train import Run

    folder = tmp_path / "run"
    shutil.copytree(finished_tiny, folder)
    for name, torn in (("metrics.csv", "30,4.87,7,4.8"), ("layers.csv", "30,blocks.0.at")):
        with open(folder / name, "a") as handle:
            handle.write(torn)
    with caplog.at_level("INFO", logger="bitnet"):
        result = Run(compose_tiny("train.checkpoint_every=10"), folder).run()
    assert result["skipped"] and result["status"] == "completed"
    for name in ("metrics.csv", "layers.csv"):
        assert (folder / name).read_text() == (finished_tiny / name).read_text()
    assert sum("ended in a torn row; cut it off" in r.getMessage() for r in caplog.records) == 2


def test_stray_temporary_files_are_removed_and_files_follow_the_umask(tmp_path, finished_tiny):
    """A kill mid-write leaves `.run.json.XXXX.tmp`; the next run of the point removes it. Every result file
    gets the permissions the user's umask gives (0600 would hide results from the group on a shared cluster)."""
    import shutil

    from bitnet.records import MetricsCSV, atomic_file
    from bitnet.train import Run

    folder = tmp_path / "run"
    shutil.copytree(finished_tiny, folder)
    stray = [folder / ".run.json.k2j4x9.tmp", folder / ".checkpoint.pt.a81bq0.tmp"]
    for path in stray:
        path.write_text("half")
    previous = os.umask(0o027)
    try:
        Run(compose_tiny("train.checkpoint_every=10"), folder).run()
        assert not any(path.exists() for path in stray)
        with atomic_file(tmp_path / "new.json") as handle:
            handle.write("{}")
        MetricsCSV.truncate_after(folder / "metrics.csv", 10)  # what a resume does to the CSVs
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640
        assert (folder / "metrics.csv").stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        with atomic_file(tmp_path / "new.json") as handle:
            handle.write("{}")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)
    # The run's own files (run.json is written through the same helper):
    assert (finished_tiny / "run.json").stat().st_mode & 0o777 == 0o666 & ~previous


def test_atomic_writes_to_one_path_never_share_a_temporary_file(tmp_path):
    from bitnet.records import atomic_file

    target = tmp_path / "checkpoint.pt"
    with atomic_file(target, "wb") as first, atomic_file(target, "wb") as second:
        assert first.name != second.name
        first.write(b"one")
        second.write(b"two")
    assert target.read_bytes() == b"one"  # the outer block ends last: its file is the one left
    with pytest.raises(RuntimeError):
        with atomic_file(target, "wb") as handle:
            handle.write(b"three")
            raise RuntimeError("the writer died")
    assert target.read_bytes() == b"one" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_corrupt_tokenizer_cache_is_named_and_rebuilt(tmp_path):
    from bitnet.data import kjv_text, load_corpus
    from bitnet.validate import validate

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(kjv_text()[:30_000])
    first = load_corpus("text", str(corpus), 300, 0.05, cache_dir=str(tmp_path / "cache"), log=lambda *_: None)
    for damaged, content in (("ids.pt", b"\x00garbage"), ("tokenizer.json", b'{"version": "1.0", "trun')):
        (first.cache_dir / damaged).write_bytes(content)
        messages = []
        again = load_corpus("text", str(corpus), 300, 0.05, cache_dir=str(tmp_path / "cache"), log=messages.append)
        assert messages[0].startswith(f"The tokenizer cache {first.cache_dir} is unreadable"), messages
        assert messages[0].endswith("rebuilding it") and "\n" not in messages[0]
        assert again.train_ids.equal(first.train_ids) and again.val_ids.equal(first.val_ids)
    umask = os.umask(0)
    os.umask(umask)
    for cached in ("ids.pt", "tokenizer.json", "info.json"):  # readable by whoever the umask lets read
        assert (first.cache_dir / cached).stat().st_mode & 0o777 == 0o666 & ~umask
    (first.cache_dir / "ids.pt").write_bytes(b"\x00garbage")  # validation goes through the same path
    validate(compose_tiny("data=text", f"data.path={corpus}", "data.vocab_size=300", f"+data.cache_dir={tmp_path / 'cache'}",
                          "eval.positions=64"))


def test_a_folder_of_another_finished_config_names_the_differing_keys(tmp_path, finished_tiny):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished_tiny, folder)
    result = run_main(*tiny("hidden=48", "train.checkpoint_every=10", "lr.peak=0.002"), f"hydra.run.dir={folder}",
                     check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {folder} holds a completed run of a different config ("), lines[0]
    for difference in ("hidden: 32 there, 48 now", "model.hidden: 32 there, 48 now", "lr.peak: 0.0015 there, 0.002 now"):
        assert difference in lines[0], lines[0]
    assert "seed" not in lines[0] and "progress" not in lines[0]  # only what differs


def test_divergence_is_reported_at_one_step(diverged_sweep):
    """Every line that says where the point diverged says the same step: the first non-finite loss."""
    import re

    sweep_dir, result = diverged_sweep
    diverged = {float(v): f for v, f in points(sweep_dir, "lr.stage2_peak").items()}[1e30]
    said = {int(n) for n in re.findall(r"(?:diverged|NaN or infinite) at step (\d+)", result.stdout, re.IGNORECASE)}
    assert said == {record(diverged)["diverged_step"]}, result.stdout


def test_eval_every_beyond_the_run_warns_that_no_checkpoint_is_taken(tmp_path, caplog):
    from bitnet.train import Run

    with caplog.at_level("WARNING", logger="bitnet"):
        Run(compose_tiny("train.steps=8", "eval.every=50", "lr.warmup=2"), tmp_path).run()
    warnings = [r.getMessage() for r in caplog.records if "No checkpoint will be taken" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "train.checkpoint_every=50 (eval.every=50) is not below the 8 steps that run" in warnings[0]
    assert "give eval.every a value below 8" in warnings[0]


@pytest.mark.slow
def test_adding_a_swept_key_says_the_points_will_be_renamed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    short = tiny("train.steps=2", "eval.every=1", "lr.warmup=1")
    first = run_main("-m", *short, "hidden=32,48", f"hydra.sweep.dir={sweep_dir}")
    assert "warning" not in first.stderr
    again = run_main("-m", *short, "hidden=32,48", f"hydra.sweep.dir={sweep_dir}")
    assert "warning" not in again.stderr  # same grid, same names: nothing to say
    wider = run_main("-m", *short, "hidden=32,48", "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    lines = [line for line in wider.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, wider.stderr
    assert (f"warning: {sweep_dir} holds 2 point folder(s) that this grid does not name (hidden=32, hidden=48); "
            f"folders are named by the keys that vary across the grid (now: hidden, seed)") in lines[0]
    assert "trained again, not skipped" in lines[0]
    assert wider.stdout.index("Training from step 0") > 0  # the warning came first; the points still ran


def test_a_finished_run_is_recognised_by_its_recorded_config_not_its_stored_hash(tmp_path, finished_tiny):
    """A scale that gains a grid value (or a fingerprint rule that changes) must not turn finished points into
    "another config": the folder's recorded config is fingerprinted by today's rule. A real difference still
    is one."""
    import shutil

    from bitnet.train import Run

    folder = tmp_path / "run"
    shutil.copytree(finished_tiny, folder)
    old = record(folder)
    old["config"]["grid"] = {"horizon": 123, "seeds": "0,1,2"}  # preset helper values are not what a run computes
    old["config_fingerprint"] = "an-older-rule"
    (folder / "run.json").write_text(json.dumps(old))
    assert Run(compose_tiny("train.checkpoint_every=10"), folder).run()["skipped"] is True
    old["config"]["train"]["label_smoothing"] = 0.3
    (folder / "run.json").write_text(json.dumps(old))
    with pytest.raises(Exception, match="train.label_smoothing: 0.3 there, 0.0 now"):
        Run(compose_tiny("train.checkpoint_every=10"), folder).run()


def test_a_point_folder_of_another_config_is_refused_and_the_sweep_goes_on(tmp_path):
    """One point folder holding another config no longer stops the sweep: that point is refused (its folder
    left as it was), the others run, and the sweep names it at the end and exits non-zero."""
    sweep = tmp_path / "sweep"
    command = ["-m", *tiny("train.steps=10"), "seed=0,1", f"hydra.sweep.dir={sweep}"]
    run_main(*command)
    other = record(sweep / "seed=0")
    other.update(config_fingerprint="0" * 16, config={**other["config"], "hidden": 48})
    (sweep / "seed=0" / "run.json").write_text(json.dumps(other))
    before = (sweep / "seed=0" / "run.json").read_bytes()
    (sweep / "seed=1" / "run.json").unlink()  # this point trains again
    result = run_main(*command, check=False)
    assert result.returncode != 0
    assert (sweep / "seed=0" / "run.json").read_bytes() == before
    assert record(sweep / "seed=1")["status"] == "completed"
    assert f"error: {sweep / 'seed=0'} holds a completed run of a different config (hidden: 48 there, 32 now)" \
        in result.stdout
    assert "1 of 2 grid points failed" in result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_write_that_runs_out_of_room_is_recorded_failed_in_one_line(tmp_path):
    """A file-size limit (what a full disk does to the next append, without filling the machine's disk): the
    point is recorded `failed` with the error, and the run says so in one line, exit 1, not in tracebacks."""
    import resource

    limit = 16_000  # bytes: run.json fits, layers.csv outgrows it after a few evaluations

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    folder = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "bitnet.run", *tiny("train.steps=60", "eval.every=1",
                                                                       "train.checkpoint_every=0"),
                             f"hydra.run.dir={folder}"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, preexec_fn=limited)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: File too large while writing ") and \
        f"{folder} is recorded as failed; free some space and run the same command again" in lines[0], lines[0]
    assert record(folder)["status"] == "failed" and "File too large" in record(folder)["error"]
