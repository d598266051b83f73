"""Real runs through the command line, as a user types them (in this process, and the presets each in its own)."""

import csv
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, TINY, run_cli, run_main

FIRST_COLUMNS = ["step", "loss", "unique_tokens"]


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_main(*TINY, "lr=two_stage", "wd=two_stage", f"hydra.run.dir={out}")
    return out, result


def test_single_run_writes_the_csv_the_seeds_grep(tiny_run):
    out, result = tiny_run
    lines = (out / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == FIRST_COLUMNS
    assert {"eval_loss", "unique_targets", "pred_entropy", "top1_share", "lr", "wd", "lr_stage", "wd_stage",
            "tokens_seen", "elapsed_s"} <= set(header)
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "10", "20"]
    # the seeds' `grep "^20," FILE | cut -d, -f3` still returns the unique tokens
    row20 = next(line for line in lines if line.startswith("20,"))
    assert int(row20.split(",")[2]) >= 1
    rows = read_rows(out / "metrics.csv")
    assert rows[0]["loss"] == ""  # nothing trained yet at step 0
    assert float(rows[2]["loss"]) < float(rows[1]["loss"]) + 0.5
    assert float(rows[-1]["eval_loss"]) < math.log(512)
    for row in rows:
        assert 1 <= int(row["unique_tokens"]) and int(row["unique_targets"]) <= 256
        assert 0 < float(row["top1_share"]) <= 1
    assert int(rows[2]["tokens_seen"]) == 20 * 8 * 32
    assert "metrics: " in result.stdout and str(out / "metrics.csv") in result.stdout
    assert "unique_tokens" in result.stdout  # the closing summary table


def test_rows_record_the_lr_and_wd_actually_applied(tiny_run):
    out, _ = tiny_run
    rows = {int(r["step"]): r for r in read_rows(out / "metrics.csv")}
    # switch at the midpoint (step 10 of 20): the row at 10 closes stage 1, the row at 20 is stage 2
    assert (rows[10]["wd"], rows[10]["wd_stage"], rows[10]["lr_stage"]) == ("0.1", "1", "1")
    assert (rows[20]["wd"], rows[20]["wd_stage"], rows[20]["lr_stage"]) == ("0", "2", "2")
    assert float(rows[10]["lr"]) == pytest.approx(1.5e-3 * (1 - 4 / 15))  # update 9, warmup 5, 15 to decay
    assert float(rows[20]["lr"]) == pytest.approx(1e-3 * (1 - 14 / 15))


def test_run_record(tiny_run):
    out, _ = tiny_run
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["step"] == 20
    assert record["params"]["total"] > record["params"]["non_embedding"] > 0
    assert record["params"]["embedding"] == 512 * 32
    assert record["config"]["hidden"] == 32 and record["eval_positions"] == 256
    assert record["switch_steps"] == {"lr": 10, "wd": 10}
    assert not (out / "checkpoint.pt").exists()  # removed once the point finished


def test_stage1_only_stops_at_the_switch(tmp_path):
    run_main(*TINY, "lr=two_stage", "wd=two_stage", "train.stage1_only=true", "train.steps=40",
            f"hydra.run.dir={tmp_path}")
    rows = read_rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 10, 20]
    assert {r["wd"] for r in rows} == {"0.1"} and {r["wd_stage"] for r in rows} == {"1"}


def test_multirun_sweep_writes_one_csv_per_point(tmp_path):
    result = run_main("-m", "hidden=32,64", *TINY[1:], f"hydra.sweep.dir={tmp_path}")
    points = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert points == ["hidden=32", "hidden=64"]
    for point in points:
        header = (tmp_path / point / "metrics.csv").read_text().splitlines()[0]
        assert header.startswith("step,loss,unique_tokens")
        assert json.loads((tmp_path / point / "run.json").read_text())["config"]["hidden"] == int(point[7:])
    assert "Launching 2 jobs" in result.stdout + result.stderr


SMOKE_PRESETS = ["scaling", "interventions", "stage1_only", "wd_stage2", "controls", "lr_wd_factorial",
                 "forensics", "screening", "fixes", "collapse_map"]
# Each preset's full grid at smoke scale (points), and the points trained end to end: seed 0 only where a preset
# sweeps seeds, since the preset's shape is what is checked, not its replication.
SMOKE_GRID = {"scaling": 2, "interventions": 4, "stage1_only": 3, "wd_stage2": 2, "controls": 6, "lr_wd_factorial": 12,
              "forensics": 27, "screening": 24, "fixes": 24, "collapse_map": 3}
TRAINED = {"scaling": 2, "interventions": 4, "stage1_only": 1, "wd_stage2": 2, "controls": 6, "lr_wd_factorial": 4,
           "forensics": 9, "screening": 8, "fixes": 8, "collapse_map": 1}


def smoke_grid(preset: str):
    """The preset's `hydra.sweeper.params` at smoke scale, resolved."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={preset}", "scale=smoke"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)


@pytest.mark.parametrize("preset", SMOKE_PRESETS)
def test_every_preset_has_its_grid_at_smoke_scale(preset):
    params = smoke_grid(preset)
    assert math.prod(len(str(values).split(",")) for values in params.values()) == SMOKE_GRID[preset]
    if "seed" in params:
        assert str(params["seed"]) == "0,1,2" and SMOKE_GRID[preset] == 3 * TRAINED[preset]
    else:
        assert SMOKE_GRID[preset] == TRAINED[preset]


@pytest.fixture(scope="module")
def smoke_sweeps(request, tmp_path_factory):
    """The selected presets at smoke scale, each launched as a user types it, in its own process: two at a time
    (threads=1 each), in the order their tests run, so a test waits only for its own sweep while the next one
    trains on the other core. Returns a function: preset -> (sweep folder, the finished process)."""
    selected = [item.callspec.params["preset"] for item in request.session.items
                if item.module is request.module and "smoke_sweeps" in item.fixturenames]
    root = tmp_path_factory.mktemp("smoke")

    def sweep(preset):
        seeds = ["seed=0"] if TRAINED[preset] < SMOKE_GRID[preset] else []
        folder = root / preset
        return folder, run_cli("-m", f"+sweep={preset}", "scale=smoke", "threads=1", *seeds,
                               f"hydra.sweep.dir={folder}", timeout=600, check=False)

    with ThreadPoolExecutor(max_workers=min(2, len(os.sched_getaffinity(0)))) as pool:
        started = {preset: pool.submit(sweep, preset) for preset in selected}

        def finished(preset):
            folder, result = started[preset].result()
            assert result.returncode == 0, f"+sweep={preset} exited {result.returncode}\n{result.stderr[-3000:]}"
            return folder
        yield finished


@pytest.mark.slow
@pytest.mark.parametrize("preset", SMOKE_PRESETS)
def test_preset_runs_end_to_end_at_smoke_scale(preset, smoke_sweeps):
    sweep_dir = smoke_sweeps(preset)
    csvs = sorted(sweep_dir.glob("*/metrics.csv"))
    assert len(csvs) == TRAINED[preset]
    for path in csvs:
        rows = read_rows(path)
        assert rows[-1]["step"] == "40"  # smoke runs are 40 steps; stage1_only runs 80 and stops at its switch
        assert json.loads((path.parent / "run.json").read_text())["status"] == "completed"


def test_diagnostics_in_a_real_full_precision_run(tmp_path):
    run_main(*TINY, "model.quant=none", "eval.generate.every=2", f"hydra.run.dir={tmp_path}")
    rows = read_rows(tmp_path / "metrics.csv")
    record = json.loads((tmp_path / "run.json").read_text())
    for row in rows:
        # flip rate and zero share do not apply without ternary weights: empty, not zero
        assert row["zero_frac"] == "" and row["flip_rate"] == ""
        assert float(row["latent_rms"]) > 0 and -1 <= float(row["hidden_cosine"]) <= 1
        assert float(row["loss_gap"]) == pytest.approx(float(row["eval_loss"]) - record["unigram_entropy"], abs=1e-4)
        assert float(row["effective_tokens"]) == pytest.approx(math.exp(float(row["pred_entropy"])), rel=1e-4)
    assert rows[0]["grad_norm"] == "" and float(rows[1]["grad_norm"]) > 0
    # generation at every 2nd evaluation: steps 0 and 20
    assert sorted(p.name for p in (tmp_path / "generations").iterdir()) == ["step_0000000.txt", "step_0000020.txt"]
    assert rows[1]["greedy_distinct1"] == "" and 0 < float(rows[2]["greedy_distinct1"]) <= 1
    assert "greedy :" in (tmp_path / "generations" / "step_0000020.txt").read_text()
    layers = read_rows(tmp_path / "layers.csv")
    assert len(layers) == 3 * 7 and {r["step"] for r in layers} == {"0", "10", "20"}


def test_ternary_run_reports_zero_share_and_flips(tiny_run):
    out, _ = tiny_run
    rows = read_rows(out / "metrics.csv")
    assert rows[0]["flip_rate"] == "" and 0 <= float(rows[1]["flip_rate"]) <= 1
    assert 0 < float(rows[2]["zero_frac"]) < 1
