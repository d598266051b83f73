"""The analysis package on a tiny real sweep: the loader, the tables command, the plots and the notebook; a
partial sweep; the seed-001 fixture sweep against the seeds' own transition and recovery figures; the collapse
diagnostics table and plot against the real sweep's CSVs, and their absence on the seed-001 fixture. The
verdicts on the seeds' other tables and on odd sweeps: tests/test_analysis_verdicts.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import NotASweep, load_sweeps
from analysis.stats import factorial_effects, mean_ci, t975
from analysis.plots import diagnostic_panels, plot_diagnostics, save_plots
from analysis.render import render
from analysis.rules import UNIGRAM_SPAN, ratio_class, token_class, verdict
from analysis.core import analyse
from bitnet.phases import learning_phase
from conftest import REPO_ROOT, TINY, run_main, tables_main

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "seed001_sweep"
# The tiny sweep's 20 steps (warm-up 5, TINY) are too short for any class or verdict (analysis.rules.too_short).
SHORT = f"too short to tell: 20 steps, needs about {5 + UNIGRAM_SPAN}"
SEED001_STEPS = ["1000", "2000", "3000", "4000", "5000", "6000", "7000", "10000"]


def tables_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m analysis.tables ARGS` in a subprocess, where the process's exit status and output are checked."""
    return subprocess.run([sys.executable, "-m", "analysis.tables", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def md_rows(markdown: str) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped."""
    lines = [line for line in markdown.strip().splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def point_dir(sweep_dir: Path, hidden: int) -> Path:
    [folder] = [p for p in sweep_dir.iterdir() if p.is_dir() and f"hidden={hidden}," in f"{p.name},"]
    return folder


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """Two real points (hidden 32 and 48), 20 steps, WD switching 0.1 -> 0.0 at the midpoint (step 10);
    generations at every 2nd evaluation (steps 0 and 20), so the generation columns are empty at step 10."""
    sweep_dir = tmp_path_factory.mktemp("analysis") / "sweep"
    tiny = [o for o in TINY if not o.startswith("hidden=")]
    run_main("-m", "hidden=32,48", "wd=two_stage", *tiny, "eval.generate.every=2", "eval.generate.new_tokens=8",
            f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


# ---- loader ---------------------------------------------------------------------------------------------------
def test_the_sweeper_writes_the_grid_manifest(tiny_sweep):
    """grid.json: every point's overrides and the folder Hydra actually gave it, in launch order."""
    points = json.loads((tiny_sweep / "grid.json").read_text())["points"]
    assert [p["folder"] for p in points] == [point_dir(tiny_sweep, h).name for h in (32, 48)]
    assert [[o for o in p["overrides"] if o.startswith("hidden=")] for p in points] == [["hidden=32"], ["hidden=48"]]
    for point in points:
        recorded = yaml.safe_load((tiny_sweep / point["folder"] / ".hydra" / "overrides.yaml").read_text())
        assert sorted(recorded) == sorted(point["overrides"])


def test_loader_one_row_per_point_and_step(tiny_sweep):
    sweep = load_sweeps(tiny_sweep)
    assert sweep.swept == ["hidden"]
    assert list(sweep.points.point) == ["hidden=32", "hidden=48"]
    assert set(sweep.points.status) == {"completed"}
    frame = sweep.frame
    for hidden in (32, 48):
        csv = pd.read_csv(point_dir(tiny_sweep, hidden) / "metrics.csv")
        rows = frame[frame.hidden == hidden]
        assert list(rows.step) == list(csv.step) == [0, 10, 20]
        assert list(rows.unique_tokens) == list(csv.unique_tokens)
        record = json.loads((point_dir(tiny_sweep, hidden) / "run.json").read_text())
        assert set(rows.params_total) == {record["params"]["total"]}
        assert set(rows.wd_switch) == {10} and rows["wd.name"].eq("two_stage").all()
    assert {"seed", "lr.peak", "wd.value", "model.quant", "status", "folder", "eval_loss"} <= set(frame.columns)


def test_softmax_entropy_and_ln_vocab(tiny_sweep):
    """The predicted distribution's entropy starts near ln(V) (an untrained model predicts almost uniformly) and
    never exceeds it; run.json records ln(V) for the phase rule."""
    for hidden in (32, 48):
        record = json.loads((point_dir(tiny_sweep, hidden) / "run.json").read_text())
        assert record["ln_vocab"] == pytest.approx(math.log(record["vocab_size"]))
        csv = pd.read_csv(point_dir(tiny_sweep, hidden) / "metrics.csv").set_index("step")
        assert list(csv.columns[:2]) == ["loss", "unique_tokens"]  # step, loss, unique_tokens stay first
        assert csv.at[0, "softmax_entropy"] == pytest.approx(record["ln_vocab"], abs=0.05)
        assert ((csv.softmax_entropy > 0) & (csv.softmax_entropy <= record["ln_vocab"] + 1e-6)).all()
        assert csv.softmax_entropy.iloc[-1] < csv.softmax_entropy.iloc[0]


def test_loader_tolerates_extra_columns(tiny_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, copy)
    csv_path = point_dir(copy, 32) / "metrics.csv"
    csv = pd.read_csv(csv_path)
    csv["zz_extra_metric"] = [1.0, 2.0, 3.0]  # a column another engineer appended later
    csv.to_csv(csv_path, index=False)
    frame = load_sweeps(copy).frame
    assert list(frame[frame.hidden == 32].zz_extra_metric) == [1.0, 2.0, 3.0]
    assert frame[frame.hidden == 48].zz_extra_metric.isna().all()


# ---- the command on the real sweep --------------------------------------------------------------------------------
def test_tables_match_the_csvs(tiny_sweep, tmp_path):
    out = tmp_path / "out"
    result = tables_main(tiny_sweep, "--steps", 10, 20, "--collapse-steps", 10, 20, "--out", out)
    assert "## Results: unique tokens per step" in result.stdout and "2 grid points: 2 completed." in result.stdout
    csv = {h: pd.read_csv(point_dir(tiny_sweep, h) / "metrics.csv").set_index("step") for h in (32, 48)}

    results = pd.read_csv(out / "results.csv")
    assert list(results.hidden) == [32, 48]
    assert {"tokens@10", "tokens@20", "switch", "status", "n"} <= set(results.columns)
    for _, row in results.iterrows():
        assert row["tokens@10"] == csv[row.hidden].at[10, "unique_tokens"]
        assert row["tokens@20"] == csv[row.hidden].at[20, "unique_tokens"]
    # The switch column sits between step 10 (last stage-1 row) and step 20 (first stage-2 row).
    header = (out / "results.md").read_text().splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["hidden", "step 10", "Stage 2→", "step 20", "status"]

    transition = pd.read_csv(out / "transition.csv")
    assert list(transition.hidden) == [32, 48]
    for _, row in transition.iterrows():
        c = csv[row.hidden]
        assert (row.before_step, row.after_step) == (10, 20)
        assert row.tokens_before == c.at[10, "unique_tokens"] and row.tokens_after == c.at[20, "unique_tokens"]
        assert row.loss_drop == pytest.approx(c.at[20, "loss"] - c.at[10, "loss"])
        assert row.loss_pct == pytest.approx((c.at[20, "loss"] - c.at[10, "loss"]) / c.at[10, "loss"] * 100)
        assert row.eval_loss_drop == pytest.approx(c.at[20, "eval_loss"] - c.at[10, "eval_loss"])
        assert row.recovery == pytest.approx(c.at[20, "unique_tokens"] / c.at[10, "unique_tokens"])
        record = json.loads((point_dir(tiny_sweep, row.hidden) / "run.json").read_text())
        before, after = (learning_phase(c.at[s, "eval_loss"], record["ln_vocab"], record["unigram_entropy"])
                         for s in (10, 20))
        assert (row.phase_before, row.phase_after) == (before, after)
    changed = md_rows((out / "transition.md").read_text())[-1][-2]  # hidden=48, the last row checked above
    assert changed == (f"{before} → {after}" if before != after else f"{before} (unchanged)")

    size = pd.read_csv(out / "size.csv")
    for _, row in size.iterrows():
        record = json.loads((point_dir(tiny_sweep, row.hidden) / "run.json").read_text())
        assert row.params == record["params"]["total"]
        assert row.lowest_stage1 == csv[row.hidden].loc[:10, "unique_tokens"].min()
        assert row.final_tokens == csv[row.hidden].at[20, "unique_tokens"]

    collapse = pd.read_csv(out / "collapse.csv")
    for _, row in collapse.iterrows():
        c = csv[row.hidden]
        assert row.ratio == pytest.approx(c.at[20, "unique_tokens"] / c.at[10, "unique_tokens"])
        assert row.ratio_class == SHORT  # 20 steps: a ratio, but no class from it
        assert row.positions == 256
    assert "256 (" in (out / "collapse.md").read_text()  # the evaluated positions, stated beside the class

    decision = pd.read_csv(out / "decision.csv")
    assert len(decision) == 1 and decision.outcome[0] == "undecided"
    assert decision.meaning[0] == f"undecided: 32 ({SHORT}); 48 ({SHORT})"
    assert "Not applicable" in (out / "factorial.md").read_text()
    for name in ("tokens.png", "loss.png", "collapse_ratio.png", "diagnostics.png", "mechanism.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    diagnostics = pd.read_csv(out / "diagnostics.csv")
    assert list(diagnostics.hidden) == [32, 48] and "## Collapse diagnostics" in result.stdout


def test_partial_sweep_reports_missing_and_failed(tiny_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, copy)
    shutil.rmtree(point_dir(copy, 48))
    record_path = point_dir(copy, 32) / "run.json"
    record = json.loads(record_path.read_text())
    record.update(status="failed", error="RuntimeError: out of memory")
    record_path.write_text(json.dumps(record))

    sweep = load_sweeps(copy)
    assert dict(zip(sweep.points.point, sweep.points.status)) == {"hidden=32": "failed", "hidden=48": "missing"}
    assert list(sweep.missing.point) == ["hidden=48"]
    assert sweep.frame[sweep.frame.point == "hidden=48"].step.isna().all()  # kept, with no metrics

    result = tables_main(copy, "--out", tmp_path / "out", "--no-plots")
    assert "2 grid points: 1 failed, 1 missing." in result.stdout
    assert "- hidden=48: missing (expected at" in result.stdout and "- hidden=32: failed" in result.stdout
    points = md_rows((tmp_path / "out" / "points.md").read_text())
    assert [row[:2] for row in points] == [["hidden=32", "failed"], ["hidden=48", "missing"]]
    assert "out of memory" in points[0][-1]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results.status) == ["failed", "missing"]  # the missing point keeps its row


def test_nothing_to_analyse_is_a_clear_error(tiny_sweep, tmp_path):
    result = tables_cli(tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path} has nothing to analyse: no multirun.yaml (a sweep folder), " \
                                    f"no metrics.csv (a run folder) and no .csv/.txt files in it"
    with pytest.raises(NotASweep, match="no such file or folder"):
        load_sweeps(tmp_path / "nope")


def test_a_single_runs_folder_is_one_point(tiny_sweep):
    """A grid point's folder on its own (or a single `python -m bitnet.run`) reads as one point, its overrides
    from .hydra/overrides.yaml."""
    sweep = load_sweeps([point_dir(tiny_sweep, 32)])
    assert list(sweep.points.status) == ["completed"] and sweep.points.hidden.tolist() == [32]
    csv = pd.read_csv(point_dir(tiny_sweep, 32) / "metrics.csv")
    assert list(sweep.frame.unique_tokens) == list(csv.unique_tokens)


# ---- the seeds' own numbers ----------------------------------------------------------------------------------------
def test_seed001_fixture_reproduces_the_seeds_tables(tmp_path):
    out = tmp_path / "out"
    tables_main(FIXTURE, "--steps", *SEED001_STEPS, "--collapse-steps", 1000, 4000, "--out", out, "--no-plots")

    # Seed 001, "Complete Results Table".
    results = {row[0]: row[1:] for row in md_rows((out / "results.md").read_text())}
    assert results == {
        "256": ["16", "8", "2", "2", "2", "WD 0.1→0.0", "**10**", "**14**", "**13**", "completed"],
        "512": ["14", "8", "4", "2", "2", "WD 0.1→0.0", "**10**", "**12**", "**11**", "completed"],
        "768": ["18", "14", "4", "2", "2", "WD 0.1→0.0", "**8**", "**11**", "**12**", "completed"],
        "1024": ["13", "8", "5", "2", "2", "WD 0.1→0.0", "**11**", "**11**", "**11**", "completed"],
    }
    # Seed 001, "Loss Drop at Stage 2 Transition" and "Token Recovery at Stage 2 Transition".
    transition = {row[0]: row[3:10] for row in md_rows((out / "transition.md").read_text())}
    assert transition == {
        "256": ["10.34", "7.32", "-3.02", "-29.2%", "2", "10", "5.0x"],
        "512": ["10.19", "7.22", "-2.97", "-29.2%", "2", "10", "5.0x"],
        "768": ["10.08", "7.22", "-2.86", "-28.4%", "2", "8", "4.0x"],
        "1024": ["10.10", "7.15", "-2.95", "-29.2%", "2", "11", "5.5x"],
    }
    assert all(row[1:3] == ["WD 0.1→0.0 @5k", "5k → 6k"] for row in md_rows((out / "transition.md").read_text()))
    # Seed 001, "Model Size Comparison".
    size = {row[0]: row[1:] for row in md_rows((out / "size.md").read_text())}
    # The seeds tick "recovery" for any rise; at the collapse level (10) 2 -> 10 and 2 -> 8 are still collapsed.
    assert size["256"] == ["28M", "2", "✓ (to 2, phase unknown)", "10", "✗ (to 10)", "13", "completed"]
    assert size["768"] == ["257M", "2", "✓ (to 2, phase unknown)", "8", "✗ (to 8)", "12", "completed"]
    assert size["1024"][4] == "✓ (to 11)"
    assert [size[h][0] for h in ("512", "1024")] == ["114M", "458M"]
    # Seed 002's collapse ratio (4k / 1k) and classes; the seeds do not say how many positions they scored.
    collapse = pd.read_csv(out / "collapse.csv").set_index("hidden")
    assert collapse.ratio.to_dict() == pytest.approx({256: 2 / 16, 512: 2 / 14, 768: 2 / 18, 1024: 2 / 13})
    assert set(collapse.ratio_class) == {"strong collapse"}
    assert set(collapse.status_late) == {"complete collapse (❌ Failed)"}
    assert collapse.status_final.to_dict() == {h: "partial collapse (⚠️ Marginal)" for h in (256, 512, 768, 1024)}
    assert all(row[-2].startswith("unknown: ") for row in md_rows((out / "collapse.md").read_text()))
    # Every size at 2 tokens at 4k: seed 002's Pattern B, "no scaling help" (seed 001's own conclusion).
    decision = pd.read_csv(out / "decision.csv")
    assert decision.outcome.tolist() == ["B"] and decision["tokens by hidden"][0] == "256: 2; 512: 2; 768: 2; 1024: 2"


def test_default_steps_and_collapse_steps_on_the_fixture():
    sweep = load_sweeps(FIXTURE)
    result = analyse(sweep)
    tables = result.tables
    assert (result.early, result.late) == (1000, 4000)  # seed 002's 1k and 4k
    assert {5000, 6000, 10000} <= set(result.steps)  # either side of the switch, and the last step
    header = tables["results"][0].columns.tolist()
    assert header.index("Stage 2→") == header.index("step 5k") + 1


def test_seed001_fixture_has_no_diagnostics(tmp_path):
    """Runs without the diagnostic columns: no diagnostics table (a one-line note) and no diagnostics.png."""
    sweep = load_sweeps(FIXTURE)
    result = analyse(sweep)
    tables = result.tables
    assert result.diagnostics == [] and tables["diagnostics"][0].empty
    assert diagnostic_panels(result) == [] and plot_diagnostics(result) is None
    written = save_plots(result, tmp_path)
    assert sorted(p.name for p in written) == ["collapse_ratio.png", "loss.png", "phase_map.png", "plots.json",
                                               "tokens.png"]
    assert not (tmp_path / "diagnostics.png").exists()
    section = render(result).split("\n## Collapse diagnostics", 1)[1].split("\n## ", 1)[0]
    section = section.strip().splitlines()
    assert len(section) == 3 and section[2].startswith("Not applicable: no collapse-diagnostic column")


# ---- classes and statistics ---------------------------------------------------------------------------------------
def test_classes_follow_the_seeds():
    assert [ratio_class(r) for r in (0.11, 0.2, 0.25, 0.5, 0.8, 0.91, 1.0, 1.01, 6.0)] == [
        "strong collapse", "moderate collapse", "moderate collapse", "minimal collapse", "minimal collapse",
        "stable", "stable", "rising", "rising"]  # a ratio above 1 is a rise, not stability
    assert [token_class(t)[0] for t in (1, 5, 6, 10, 11, 30, 31, 100, 101, 500, 501)] == [
        "complete collapse", "complete collapse", "severe collapse", "severe collapse", "partial collapse",
        "partial collapse", "questionable", "questionable", "acceptable", "acceptable", "very good"]


def test_mean_ci_and_factorial_effects():
    assert t975(4) == 2.776 and abs(t975(60) - 2.000) < 1e-3
    mean, lo, hi, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and (lo, hi) == pytest.approx((2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5))
    assert mean_ci([5.0])[1:3] != mean_ci([5.0])[1:3]  # NaN: no interval from one seed
    # Cell means 2, 6, 3, 11 (off/off, LR, WD, both), within-cell variance 2, 2 seeds each: df 4, SE 1 for the
    # main effects and 2 for the difference of differences.
    effects = factorial_effects({(False, False): [1, 3], (True, False): [5, 7], (False, True): [2, 4],
                                 (True, True): [10, 12]})
    assert effects["LR switch (main effect)"] == pytest.approx((6.0, 6 - 2.776, 6 + 2.776, 4))
    assert effects["WD switch (main effect)"] == pytest.approx((3.0, 3 - 2.776, 3 + 2.776, 4))
    assert effects["LR x WD interaction"] == pytest.approx((4.0, 4 - 2 * 2.776, 4 + 2 * 2.776, 4))


def write_point(sweep_dir: Path, name: str, overrides: list[str], config: dict, rows: list[dict]) -> None:
    folder = sweep_dir / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    switches = {k: config[k].get("switch_step") if config[k]["name"] == "two_stage" else None for k in ("lr", "wd")}
    last = rows[-1]["step"]
    (folder / "run.json").write_text(json.dumps({"status": "completed", "step": last, "last_step": last,
                                                 "total_steps": last, "params": {"total": 1000},
                                                 "eval_positions": 64, "switch_steps": switches,
                                                 "config": config}))


def test_factorial_table_from_a_typed_factorial_sweep(tmp_path):
    """lr=linear,two_stage wd=constant,two_stage seed=0,1 with final tokens typed so the effects are known."""
    sweep_dir = tmp_path / "factorial"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "lr=linear,two_stage", "wd=constant,two_stage", "seed=0,1"]}}}))
    final = {("linear", "constant"): [1, 3], ("two_stage", "constant"): [5, 7], ("linear", "two_stage"): [2, 4],
             ("two_stage", "two_stage"): [10, 12]}
    for (lr, wd), values in final.items():
        for seed, tokens in enumerate(values):
            config = {"hidden": 32, "seed": seed, "lr": {"name": lr, "peak": 1.5e-3, "stage2_peak": 1e-3,
                                                          "switch_step": 50},
                      "wd": {"name": wd, "value": 0.1, "stage2_value": 0.0, "switch_step": 50}}
            rows = [{"step": s, "loss": 5.0, "unique_tokens": 20 if s < 300 else tokens,  # 300 steps: long enough
                     "eval_loss": 5.0 - 0.1 * (s == 300) * (lr == "two_stage")} for s in (0, 50, 300)]
            write_point(sweep_dir, f"lr={lr},seed={seed},wd={wd}", [f"lr={lr}", f"wd={wd}", f"seed={seed}"],
                        config, rows)
    sweep = load_sweeps(sweep_dir)
    assert sweep.swept == ["lr.name", "wd.name", "seed"] and "lr" in sweep.frame  # the CSV's lr stays the LR
    tables = analyse(sweep).tables
    effects = tables["factorial"][1].set_index("effect")
    assert effects.final_tokens.to_dict() == pytest.approx(
        {"LR switch (main effect)": 6.0, "WD switch (main effect)": 3.0, "LR x WD interaction": 4.0})
    assert effects.final_eval_loss["LR switch (main effect)"] == pytest.approx(-0.1)
    assert effects.final_tokens_lo["LR switch (main effect)"] == pytest.approx(6 - 2.776)
    md = tables["factorial"][0]
    assert md.loc[md.effect == "LR switch (main effect)", "final unique tokens"].item() == "+6.00 [+3.22, +8.78]"
    # Two seeds per cell: the results table gives means with their intervals.
    results = tables["results"][1]
    both = results[(results["lr.name"] == "two_stage") & (results["wd.name"] == "two_stage")].iloc[0]
    assert (both["tokens@300"], both.n) == (11.0, 2)
    assert both["tokens@300_hi"] == pytest.approx(11 + 12.706 * 2**0.5 / 2**0.5)
    assert both["tokens@300_lo"] == 0 and both["tokens@300_clipped"]  # 11 - 12.7 tokens: cut at 0, and said so
    assert tables["results"][0].iloc[-1]["step 300"] == "**11 [0†, 23.7]**"


# ---- the notebook --------------------------------------------------------------------------------------------------
def run_notebook(sweep_dir: Path, figures: Path, monkeypatch) -> list:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("BITNET_SWEEP", str(sweep_dir))
    monkeypatch.setenv("BITNET_FIGURES", str(figures))
    notebook = nbformat.read(REPO_ROOT / "analysis" / "sweep_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


@pytest.mark.slow  # a Jupyter kernel that imports the analysis stack
def test_notebook_runs_against_the_tiny_sweep(tiny_sweep, tmp_path, monkeypatch):
    outputs = run_notebook(tiny_sweep, tmp_path, monkeypatch)
    # the notebook renders the Analysis the tables command and the report render: the same text, table by table
    from analysis.render import table_markdown

    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    analysis = analyse(load_sweeps(tiny_sweep))
    for name in ("results", "trajectory", "interventions", "decision", "diagnostics"):
        assert table_markdown(name, analysis, phase_above=False) in printed, name
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4  # tokens, loss, collapse ratio, diagnostics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collapse_ratio.png", "diagnostics.png", "loss.png",
                                                          "tokens.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in tmp_path.iterdir())
    assert any("hidden cos @deepest" in o.get("text", "") for o in outputs)
    assert any("hidden=48" in str(o.get("data", {}).get("text/plain", "")) for o in outputs)


@pytest.mark.slow  # a Jupyter kernel that imports the analysis stack
def test_notebook_on_the_interventions_fixture_saves_no_empty_collapse_plot(tmp_path, monkeypatch):
    outputs = run_notebook(REPO_ROOT / "tests" / "fixtures" / "seed004_sweep", tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "tokens.png"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "Only reduced_lr avoids ending collapsed" in text and "does not vary hidden" in text
    # the diagnosis of each run, from the same Analysis
    assert "intervention=reduced_lr: collapse then recovery without a switch (pathology)" in text


# ---- collapse diagnostics (issue 6) ---------------------------------------------------------------------------
DIAG = ["unique_tokens", "loss_gap", "hidden_cosine", "effective_tokens", "softmax_entropy", "flip_rate", "zero_frac",
        "greedy_repeat3"]


def same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def check_diagnostics_rows(sweep_dir: Path, table: pd.DataFrame, expect_deepest: dict | None = None,
                           verdict_of=lambda values, median: "; ".join(verdict(values, median))) -> None:
    """Every row of the diagnostics table against its point's metrics.csv, the step chosen independently."""
    assert list(table.hidden) == [32, 48] and set(table.n) == {1}
    for _, row in table.iterrows():
        csv = pd.read_csv(point_dir(sweep_dir, row.hidden) / "metrics.csv").set_index("step")
        deepest = csv.index[csv.unique_tokens == csv.unique_tokens.min()].min()  # fewest tokens, earliest
        if expect_deepest and row.hidden in expect_deepest:
            assert deepest == expect_deepest[row.hidden]
        median = csv.flip_rate.median()
        for at, step in (("deepest", deepest), ("final", csv.index.max())):
            assert row[f"step@{at}"] == step
            for column in DIAG:
                assert same(row[f"{column}@{at}"], csv.at[step, column]), (row.hidden, at, column)
            values = {c: csv.at[step, c] for c in DIAG}
            assert row[f"verdict@{at}"] == verdict_of(values, median)


def test_diagnostics_table_matches_the_csvs(tiny_sweep, tmp_path):
    sweep = load_sweeps(tiny_sweep)
    assert set(sweep.points.unigram_entropy) == {json.loads((point_dir(tiny_sweep, 32) / "run.json").read_text())[
        "unigram_entropy"]}
    result = analyse(sweep)
    tables = result.tables
    assert result.diagnostics == ["loss_gap", "hidden_cosine", "effective_tokens", "softmax_entropy", "flip_rate",
                                     "zero_frac", "greedy_repeat3"]
    md, table = tables["diagnostics"]
    check_diagnostics_rows(tiny_sweep, table, verdict_of=lambda values, median: SHORT)  # 20 steps: no verdict
    csv = pd.read_csv(point_dir(tiny_sweep, 32) / "metrics.csv").set_index("step")
    assert csv.greedy_repeat3.isna().tolist() == [False, True, False]  # generation rows only: steps 0 and 20
    assert csv.flip_rate.isna().tolist() == [True, False, False]       # nothing to compare with at step 0
    assert csv.loss_gap.to_numpy() == pytest.approx(csv.eval_loss.to_numpy() - sweep.points.unigram_entropy[0],
                                                    abs=1e-4)
    shown = ("tokens", "loss gap", "hidden cos", "eff. tokens", "softmax entropy", "flip rate", "zero frac",
             "greedy rep3", "phase", "verdict")
    assert md.columns.tolist() == ["hidden"] + [c for at in ("deepest", "final")
                                                for c in [f"{at} step"] + [f"{h} @{at}" for h in shown]] + ["status"]
    first = table.iloc[0]
    assert md["hidden cos @final"][0] == f"{first['hidden_cosine@final']:.3f}"
    assert md["tokens @final"][0] == f"{first['unique_tokens@final']:.0f}"

    # Edit hidden=32's token counts to a tie (3 at steps 10 and 20): the deepest collapse is the earliest, step
    # 10, where the generation columns are empty; the final row stays step 20.
    copy = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, copy)
    path = point_dir(copy, 32) / "metrics.csv"
    edited = pd.read_csv(path)
    edited["unique_tokens"] = [40, 3, 3]
    edited.to_csv(path, index=False)
    md, table = analyse(load_sweeps(copy)).tables["diagnostics"]
    check_diagnostics_rows(copy, table, expect_deepest={32: 10}, verdict_of=lambda values, median: SHORT)
    assert md["deepest step"][0] == "10" and md["greedy rep3 @deepest"][0] == "–"
    assert md["greedy rep3 @final"][0] != "–"


def test_verdict_rules():
    few = {"unique_tokens": 4}
    assert verdict({**few, "loss_gap": 0.05}) == ["unigram phase"]
    assert verdict({**few, "loss_gap": -0.09}) == ["unigram phase"]
    assert verdict({**few, "loss_gap": 0.1}) == ["few tokens, no diagnostic signal"]    # 0.1 is not < 0.1
    assert verdict({"unique_tokens": 31, "loss_gap": 0.0}) == ["no collapse signal"]    # not few tokens
    assert verdict({**few, "hidden_cosine": 0.95}) == ["representation collapse"]
    assert verdict({**few, "hidden_cosine": 0.9}) == ["few tokens, no diagnostic signal"]
    assert verdict({**few, "flip_rate": 0.021}, flip_median=0.01) == ["weights churning"]
    assert verdict({**few, "flip_rate": 0.02}, flip_median=0.01) == ["few tokens, no diagnostic signal"]
    assert verdict({**few, "flip_rate": 0.5}) == ["few tokens, no diagnostic signal"]   # no median: no claim
    assert verdict({**few, "greedy_repeat3": 0.5}) == ["greedy output loops"]
    assert verdict({"unique_tokens": 2, "loss_gap": 0.02, "hidden_cosine": 0.99, "flip_rate": 0.3,
                    "greedy_repeat3": 0.9}, flip_median=0.1) == [
        "unigram phase", "representation collapse", "weights churning", "greedy output loops"]
    assert verdict({**few, "loss_gap": float("nan"), "hidden_cosine": float("nan")}) == [
        "few tokens, no diagnostic signal"]
    assert verdict({"unique_tokens": float("nan"), "hidden_cosine": 0.99}) == []


def test_diagnostics_over_seeds_and_without_flip_rate(tmp_path):
    """hidden=32 x seed=0,1 typed with quant=none-like rows (flip_rate empty): means with 95% intervals, the
    verdict counted per seed, and no flip-rate column or panel."""
    sweep_dir = tmp_path / "seeds"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=0,1"]}}}))
    cosine = {0: [0.2, 0.95, 0.5], 1: [0.2, 0.5, 0.85]}  # seed 0 collapses its representations at step 50
    for seed in (0, 1):
        config = {"hidden": 32, "seed": seed, "lr": {"name": "linear", "peak": 1e-3},
                  "wd": {"name": "constant", "value": 0.1}}
        rows = [{"step": s, "loss": 5.0, "unique_tokens": t, "eval_loss": 5.0, "loss_gap": g, "hidden_cosine": c,
                 "effective_tokens": 3.0, "zero_frac": 0.3, "flip_rate": ""}
                for s, t, g, c in zip((0, 50, 300), (100, 2 + seed, 20), (1.0, 0.05 + seed, 0.5), cosine[seed])]
        write_point(sweep_dir, f"seed={seed}", [f"seed={seed}"], config, rows)
    sweep = load_sweeps(sweep_dir)
    result = analyse(sweep)
    assert diagnostic_panels(result) == ["hidden_cosine", "loss_gap"]
    tables = result.tables
    assert "flip_rate" not in result.diagnostics
    md, table = tables["diagnostics"]
    assert len(table) == 1 and table.n[0] == 2 and "flip rate @deepest" not in md
    row = table.iloc[0]
    assert row["step@deepest"] == 50 and row["unique_tokens@deepest"] == 2.5
    assert row["hidden_cosine@deepest"] == pytest.approx(0.725)
    half = 12.706 * 0.225 * 2**0.5 / 2**0.5  # t(1) * sd / sqrt(2), sd of (0.95, 0.5) = 0.45 / sqrt(2)
    assert (row["hidden_cosine@deepest_lo"], row["hidden_cosine@deepest_hi"]) == pytest.approx(
        (0.725 - half, 0.725 + half))
    assert row["verdict@deepest"] == "unigram phase (1/2 seeds); representation collapse (1/2 seeds); " \
                                     "few tokens, no diagnostic signal (1/2 seeds)"
    assert row["verdict@final"] == "few tokens, no diagnostic signal (2/2 seeds)"
    assert md["hidden cos @deepest"][0] == f"0.725 [{0.725 - half:.3f}, {0.725 + half:.3f}]"
    fig = plot_diagnostics(result)
    assert [ax.get_ylabel().split()[0] for ax in fig.axes] == ["hidden", "loss"]


def test_the_tokens_plot_labels_only_ticks_that_do_not_crowd():
    """Between powers of ten only the 2 and 5 ticks carry a label: with all of them, 8, 9 and 10 overlapped."""
    import matplotlib

    matplotlib.use("Agg")
    from analysis.examples import examples_dir
    from analysis.plots import plot_tokens

    fig = plot_tokens(analyse(load_sweeps(examples_dir() / "seed004_sweep", warn=lambda *_: None)))
    fig.canvas.draw()
    axis = fig.axes[0].yaxis
    low, high = fig.axes[0].get_ylim()
    shown = {label.get_text() for tick, label in zip([*axis.get_majorticklocs(), *axis.get_minorticklocs()],
                                                     [*axis.get_majorticklabels(), *axis.get_minorticklabels()])
             if low <= tick <= high and label.get_text()}
    assert shown == {"2", "5", "10", "20"}  # the fixture's counts run from 2 to 20
