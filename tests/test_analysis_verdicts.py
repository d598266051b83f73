"""Every verdict the analysis prints, on the seeds' own tables typed into fixture sweeps (tests/fixtures, see its
README) and on partial and odd sweeps: scaling decisions (with the seeds' own C examples), collapse trajectories,
the intervention summary, learning phases on a real tiny run, pooling, torn CSV lines, bad options, `| head`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_sweeps
from analysis.load import read_metrics
from analysis.rules import (Rules, decide_scaling, intervention_summary, signature_parts, signature_verdict,
                            trajectory_class, unreachable_classes)
from analysis.core import analyse
from bitnet.phases import CONTEXTUAL, NEAR_UNIFORM, PHASES, UNIGRAM, UNKNOWN, learning_phase
from conftest import REPO_ROOT, TINY, run_main, tables_main

FIXTURES = REPO_ROOT / "tests" / "fixtures"


def table(sweep_dir: Path, name: str, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    result = analyse(load_sweeps(sweep_dir), **kwargs)
    tables = result.tables
    md, csv = tables[name]
    return md, csv, result


def decisions(sweep_dir: Path, **kwargs) -> dict:
    md, _, _ = table(sweep_dir, "decision", **kwargs)
    return {row.example: row for _, row in md.iterrows()}


# ---- scaling decisions --------------------------------------------------------------------------------------
def test_seed000_outcomes_and_its_own_c_examples():
    rows = decisions(FIXTURES / "seed000_sweep")
    assert {e: (r.outcome, r.pattern) for e, r in rows.items()} == {
        "A": ("C", "gradual"),        # 2/20/60/300 at 4k: 512 and 768 sit between collapsed and diverse
        "B": ("B", "flat"),           # 2/2/2/2
        "C1": ("C", "gradual"),       # 2/5/50/500, "exponential improvement"
        "C2": ("C", "plateau"),       # 2/3/4/5, "plateau effect"
        "C3": ("C", "non-monotonic"),  # 2/100/10/200
    }
    assert rows["C3"]["flags"].startswith("non-monotonic") and "768" in rows["C3"].meaning
    assert rows["C1"]["tokens by hidden"] == "256: 2; 512: 5; 768: 50; 1024: 500"
    assert rows["A"]["tokens by hidden"] == "256: 2; 512: 20; 768: 60; 1024: 300"
    assert rows["A"]["diverse (>100)"] == "1024" and rows["B"]["diverse (>100)"] == "none"
    assert all(r["phase by hidden"] == "phase unknown" for r in rows.values())  # the seeds give no eval loss
    assert all("decided on fewer than 3 seeds per size" in r["flags"] for r in rows.values())
    assert all(r.step == "4k" for r in rows.values())


def test_seed002_patterns_and_the_threshold_the_seeds_disagree_on():
    rows = decisions(FIXTURES / "seed002_sweep")
    assert {e: (r.outcome, r.pattern) for e, r in rows.items()} == {
        "A": ("C", "gradual"), "B": ("B", "flat"), "C": ("C", "gradual"), "ratio": ("C", "gradual")}
    # With the second note's threshold (50+ tokens at 768), its Pattern A is a threshold at 768, Pattern C stays
    # gradual (40 at 768 is neither collapsed nor diverse).
    rows = decisions(FIXTURES / "seed002_sweep", rules=Rules(diverse=50))
    assert (rows["A"].outcome, rows["A"].pattern) == ("A", "monotonic, threshold at 768")
    assert rows["A"].meaning.startswith("scaling fixes it: hidden ≥ 768")
    assert (rows["C"].outcome, rows["C"].pattern) == ("C", "gradual")
    assert rows["A"]["diverse (>50)"] == "768, 1024"



def test_the_threshold_is_an_option_printed_with_the_rule(tmp_path):
    out = tables_main(FIXTURES / "seed002_sweep", "--diverse", 50, "--no-plots", "--out", tmp_path).stdout
    assert "diverse = more than 50 tokens" in out and "monotonic, threshold at 768" in out


def test_seed002_collapse_ratios():
    _, csv, result = table(FIXTURES / "seed002_sweep", "collapse")
    assert (result.early, result.late) == (1000, 4000)
    ratios = csv[csv.example == "ratio"].set_index("hidden")
    assert ratios.ratio.round(2).to_dict() == {256: 0.11, 512: 0.25, 768: 0.80, 1024: 0.91}
    assert ratios.ratio_class.to_dict() == {256: "strong collapse", 512: "moderate collapse",
                                            768: "minimal collapse", 1024: "stable"}


def test_decision_rules_on_odd_sweeps():
    def sizes(tokens, seeds=3):
        return [{"hidden": h, "tokens": t, "seeds": seeds, "waiting": []} for h, t in zip([256, 512, 768, 1024], tokens)]

    rules = Rules()
    diverse = decide_scaling(sizes([150, 200, 300, 400]), rules)
    assert diverse["outcome"] == "–" and diverse["flags"] == "smallest size already diverse"
    assert "cannot show a size threshold" in diverse["meaning"]
    sharp = decide_scaling(sizes([2, 10, 150, 400]), rules)
    assert (sharp["outcome"], sharp["pattern"], sharp["flags"]) == ("A", "monotonic, threshold at 768", "")
    # 512 better than 768 (the second note's red flag), with the smallest size diverse too
    odd = decide_scaling(sizes([120, 400, 50, 300]), rules)
    assert odd["outcome"] == "C" and odd["flags"] == "non-monotonic; smallest size already diverse"
    assert decide_scaling(sizes([2, 10, 150, 400], seeds=2), rules)["flags"] == "decided on fewer than 3 seeds per size"
    assert decide_scaling(sizes([2])[:1], rules)["meaning"] == "undecided: needs two or more hidden sizes"


# ---- a sweep caught part way --------------------------------------------------------------------------------
def test_partial_sweep_is_undecided_and_says_what_it_waits_for(tmp_path):
    warnings = []
    sweep = load_sweeps(FIXTURES / "partial_sweep", warn=warnings.append)
    assert dict(zip(sweep.points.point, sweep.points.status)) == {
        "hidden=256": "completed", "hidden=512": "completed", "hidden=768": "failed", "hidden=1024": "running",
        "hidden=1536": "missing", "hidden=2048": "diverged"}
    assert warnings == [f"{FIXTURES / 'partial_sweep' / 'hidden=512' / 'metrics.csv'}: last line '10000,,1' is torn "
                        f"(cut off mid-write), dropped"]
    result = analyse(sweep)
    tables = result.tables
    decision = tables["decision"][0].iloc[0]
    assert decision.outcome == "undecided"
    assert decision.meaning == "undecided: waiting for 768 (failed), 1024 (running), 1536 (missing), 2048 (diverged)"
    assert decision["tokens by hidden"] == "256: 2; 512: 2"
    # The torn line did not become 512's final tokens (1): its real step-10000 row (11) stands.
    trajectory = tables["trajectory"][1].set_index("hidden")
    assert trajectory.final_tokens[512] == 11
    assert trajectory.trajectory.to_dict() == {
        256: "collapsed and recovered", 512: "collapsed and recovered", 768: "never collapsed (so far)", 1024: "collapsed and stayed (so far)",
        1536: "–", 2048: "diverged (training loss became NaN or infinite at step 2000)"}  # listed apart, unclassed
    collapse = tables["collapse"][0].set_index("hidden")
    assert collapse.loc["1024", "tokens @4k"] == "not reached (running, at 3k)"
    assert collapse.loc["1536", "tokens @4k"] == "not reached (missing)"
    text = tables_main(FIXTURES / "partial_sweep", "--no-plots", "--out", tmp_path).stdout
    assert "6 grid points: 2 completed, 1 failed, 1 running, 1 missing, 1 diverged." in text
    assert "last line '10000,,1' is torn" in text and "undecided: waiting for 768 (failed)" in text


def test_a_torn_step_is_dropped_not_read_as_an_earlier_step(tmp_path):
    """`1000` cut from `10000`: without its newline it would replace the real step-1000 row."""
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,unique_tokens\n1000,,16\n2000,,8\n1000")
    warnings = []
    frame = read_metrics(path, warnings.append)
    assert frame.step.tolist() == [1000, 2000] and frame.unique_tokens.tolist() == [16, 8]
    assert warnings == [f"{path}: last line '1000' is torn (cut off mid-write), dropped"]
    path.write_text("step,loss,unique_tokens\n1000,,16\n2000,,8\n")  # a whole file: nothing dropped, no warning
    assert read_metrics(path, warnings.append).step.tolist() == [1000, 2000] and len(warnings) == 1
    path.write_text("step,loss,unique_tokens\n1000,,16\n2000,,8,0.5\n3000,,4\n")  # a row wider than the header
    assert read_metrics(path, warnings.append).step.tolist() == [1000, 3000]
    assert warnings[-1].startswith(f"{path}: rows that do not fit the header were skipped (")


# ---- interventions and trajectories -------------------------------------------------------------------------
def test_seed004_interventions_trajectories_and_summary(tmp_path):
    result = analyse(load_sweeps(FIXTURES / "seed004_sweep"))
    tables = result.tables
    md, csv = tables["interventions"]
    assert md.intervention.tolist() == ["standard", "reduced_lr", "label_smoothing", "grad_clip"]  # as declared
    assert md.trajectory.tolist() == ["collapsed and stayed", "collapsed and recovered", "collapsed and stayed",
                                      "collapsed and stayed"]
    assert md.minimum.tolist() == ["2, phase unknown @4k", "3, phase unknown @1k", "2, phase unknown @3k",
                                   "2, phase unknown @3k"]
    assert md.final.tolist() == ["2, phase unknown", "18, phase unknown", "2, phase unknown", "2, phase unknown"]
    assert result.notes["interventions"][0] == (
        "Summary: Only reduced_lr avoids ending collapsed; standard, label_smoothing, grad_clip end collapsed "
        "(ends collapsed = at most 10 unique tokens at the last evaluation)")
    trajectory = tables["trajectory"][1].set_index("intervention")
    assert trajectory.first_collapse.to_dict() == {"standard": 2000, "reduced_lr": 1000, "label_smoothing": 3000,
                                                   "grad_clip": 2000}
    assert trajectory.recovery_factor["reduced_lr"] == 6.0 and trajectory.recovery_factor["standard"] == 1.0
    loss = tables["trajectory"][0].set_index("intervention")["loss into the minimum"]
    assert loss["standard"] == "10.99 → 10.25 (train)" and loss["reduced_lr"] == "10.98 → 9.89 (train)"
    # The seeds' 1k -> 4k ratio for reduced LR is 18 / 3 = 6: a rise, not "stable".
    collapse = tables["collapse"][1].set_index("intervention")
    assert collapse.ratio["reduced_lr"] == 6.0 and collapse.ratio_class["reduced_lr"] == "rising"
    assert collapse.ratio_class["standard"] == "strong collapse"
    assert tables["decision"][0].empty  # no hidden axis: no scaling verdict
    text = tables_main(FIXTURES / "seed004_sweep", "--out", tmp_path).stdout
    assert "Summary: Only reduced_lr avoids ending collapsed" in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["loss.png", "tokens.png"]  # no empty ratio frame


def test_trajectory_classes_and_summary_rules():
    rules = Rules()
    assert trajectory_class([(0, 20), (1000, 3), (2000, 10), (3000, 14), (4000, 18)], rules) == \
        "collapsed and recovered"
    assert trajectory_class([(1000, 16), (3000, 2), (5000, 2), (6000, 10), (7000, 14)], rules, switch_step=5000) == \
        "recovered only after a switch"
    assert trajectory_class([(1000, 19), (4000, 2)], rules, finished=False) == "collapsed and stayed (so far)"
    assert trajectory_class([(1000, 40), (4000, 11)], rules) == "never collapsed"
    assert trajectory_class([(1000, 40), (4000, 11)], Rules(collapse_level=30)) == "collapsed and stayed"
    arms = [{"arm": "a", "final_tokens": [2, 3], "waiting": []}, {"arm": "b", "final_tokens": [20, 2], "waiting": []},
            {"arm": "c", "final_tokens": [40], "waiting": []}]
    assert intervention_summary(arms, rules).startswith("Only c avoids ending collapsed; a ends collapsed; b: seeds "
                                                        "disagree")
    arms[2]["waiting"] = ["running"]
    assert intervention_summary(arms, rules) == "undecided: waiting for c (running)"
    # arm names are data: never capitalised
    healthy = [{"arm": "adamw", "final_tokens": [60], "waiting": []},
               {"arm": "adam_l2", "final_tokens": [30], "waiting": []}]
    assert intervention_summary(healthy, rules).startswith("adamw, adam_l2 avoid ending collapsed")


def test_multi_key_arms_stay_apart_in_the_intervention_summary(tmp_path):
    """A factorial's arms (two keys each) are named key=value/key=value, so the comma list stays readable
    (the committed LR x WD factorial study: every cell ends at 10 or fewer distinct predictions)."""
    result = tables_main(REPO_ROOT / "results" / "lr_wd_factorial_coupled_l2_study", "--out", tmp_path)
    assert ("every arm ends collapsed: lr.name=linear/wd.name=constant, lr.name=linear/wd.name=two_stage, "
            "lr.name=two_stage/wd.name=constant, lr.name=two_stage/wd.name=two_stage") in result.stdout


# ---- learning phases ----------------------------------------------------------------------------------------
def test_phase_rule():
    ln_v, h1 = math.log(32000), 7.4  # a 32k vocabulary; English BPE unigram entropy
    assert learning_phase(10.25, ln_v, h1) == NEAR_UNIFORM   # the seeds' loss during the collapse
    assert learning_phase(7.2, ln_v, h1) == CONTEXTUAL        # 0.2 nats under H1
    assert learning_phase(7.35, ln_v, h1) == UNIGRAM
    assert learning_phase(8.85, ln_v, h1) == UNIGRAM and learning_phase(8.95, ln_v, h1) == NEAR_UNIFORM  # midpoint 8.885
    assert learning_phase(None, ln_v, h1) == learning_phase(float("nan"), ln_v, h1) == UNKNOWN
    assert learning_phase(7.0, None, h1) == UNKNOWN
    assert learning_phase(7.35, ln_v, h1, contextual_margin=0.01) == CONTEXTUAL


@pytest.mark.slow
def test_a_real_tiny_run_goes_through_the_phases_without_the_signature(tmp_path):
    """200 steps of a tiny model with the recipe's two-stage LR and WD (switch at step 100): near-uniform at step
    0, then the unigram plateau with few tokens, then below it: the few-token moment is the unigram phase, not
    the investigation's collapse signature, because the loss keeps falling through it."""
    sweep_dir = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith(("train.steps", "eval.every", "train.batch_size"))]
    run_main("-m", *tiny, "train.steps=200", "eval.every=20", "train.batch_size=16", "lr=two_stage", "wd=two_stage",
            f"hydra.sweep.dir={sweep_dir}")
    sweep = load_sweeps(sweep_dir)
    result = analyse(sweep)
    tables = result.tables
    [curve] = result.curves.values()
    [folder] = [p for p in sweep_dir.iterdir() if p.is_dir()]
    record = json.loads((folder / "run.json").read_text())
    csv = pd.read_csv(folder / "metrics.csv")
    expected = [learning_phase(loss, record["ln_vocab"], record["unigram_entropy"]) for loss in csv.eval_loss]
    assert curve.phase.tolist() == expected
    assert list(dict.fromkeys(expected)) == list(PHASES)  # each phase in turn, never back
    assert tables["trajectory"][0].final[0] == f"{csv.unique_tokens.iloc[-1]}, contextual"
    assert tables["collapse"][0]["final phase"][0] == CONTEXTUAL
    signature = tables["signature"][1].iloc[0]
    assert signature.signature == "no 1/1"
    # whether this machine's run dips to <= 5 tokens before the switch varies with the CPU's arithmetic: with a
    # plateau its loss is shown to fall (stalled "no"); without one there is nothing to call stalled
    plateau = signature.signature_plateau == "yes 1/1"
    assert signature.signature_stalled == ("no 1/1" if plateau else "unknown 1/1")
    out = tmp_path / "out"
    text = tables_main(sweep_dir, "--no-plots", "--out", out).stdout
    assert "Learning phase: phase from eval loss" in text and ", contextual" in text


def test_phase_thresholds_are_options(tmp_path):
    result = tables_main(FIXTURES / "seed004_sweep", "--near-uniform-share", 1.5, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: --near-uniform-share=1.5 is not allowed: use a share strictly between 0 and 1"


# ---- positions, pooling, command-line behaviour -------------------------------------------------------------
def write_sweep(root: Path, points: list[tuple[str, dict, dict, list[dict]]]) -> Path:
    """points: (folder, overrides, record extras, rows); configs share everything but what is given."""
    root.mkdir(parents=True)
    manifest = []
    for folder, overrides, extra, rows in points:
        lines = [f"{k}={v}" for k, v in overrides.items()]
        manifest.append({"overrides": lines, "folder": folder})
        (root / folder / ".hydra").mkdir(parents=True)
        (root / folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in lines))
        config = {"hidden": 32, "seed": 0, "lr": {"peak": 1e-3, "warmup": 5}, **extra.pop("config", {})}
        config.update({k: v for k, v in overrides.items() if k in ("hidden", "seed")})
        record = {"status": "completed", "last_step": 100, "total_steps": 100, "eval_positions": 256,
                  "config": config, **extra}
        (root / folder / "run.json").write_text(json.dumps(record))
        pd.DataFrame(rows).to_csv(root / folder / "metrics.csv", index=False)
    (root / "grid.json").write_text(json.dumps({"points": manifest}))
    return root


ROWS = [{"step": 0, "loss": None, "unique_tokens": 40}, {"step": 100, "loss": 5.0, "unique_tokens": 4}]


def test_points_that_differ_beyond_the_seed_are_not_pooled(tmp_path):
    a = write_sweep(tmp_path / "a", [("seed=0", {"seed": 0}, {}, ROWS)])
    b = write_sweep(tmp_path / "b", [("seed=1", {"seed": 1}, {"config": {"lr": {"peak": 1e-3, "warmup": 50}},
                                                                "eval_positions": 512}, ROWS)])
    result = analyse(load_sweeps([a, b]))
    tables = result.tables
    assert result.differing == ["lr.warmup", "eval_positions"]
    assert len(tables["results"][1]) == 2 and set(tables["results"][1].n) == {1}
    assert result.notes["points"][0].startswith("Points that differ in lr.warmup, eval_positions (not only in seed)")
    result = analyse(load_sweeps([a, b]), pool=True)
    pooled = result.tables
    assert pooled["results"][1].n.tolist() == [2] and "POOLED" in result.notes["points"][0]
    same = write_sweep(tmp_path / "c", [("seed=1", {"seed": 1}, {}, ROWS)])
    result = analyse(load_sweeps([a, same]))
    tables = result.tables
    assert result.differing == [] and tables["results"][1].n.tolist() == [2]


def test_positions_bound_the_classes(tmp_path):
    assert unreachable_classes(64) == ["acceptable", "very good"]
    assert unreachable_classes(4096) == [] and unreachable_classes(None) == []
    bad = [{"step": 0, "unique_tokens": 40}, {"step": 100, "unique_tokens": 80}]
    sweep_dir = write_sweep(tmp_path / "s", [("seed=0", {"seed": 0}, {"eval_positions": 64}, bad)])
    result = analyse(load_sweeps(sweep_dir))
    tables = result.tables
    assert tables["collapse"][0]["evaluated positions"][0] == "64; unreachable: acceptable, very good"
    assert result.notes["points"] == ["seed=0: 80 unique tokens at one evaluation but only 64 positions "
                                         "evaluated: an error in the data"]


def test_steps_never_evaluated_are_an_error(tmp_path):
    result = tables_main(FIXTURES / "seed004_sweep", "--collapse-steps", 1000, 1500, "--out", tmp_path, check=False)
    assert result.returncode == 2 and result.stdout == "" and not any(tmp_path.iterdir())
    assert result.stderr.strip() == ("error: --collapse-steps: step 1500 was never evaluated by any point "
                                     "(evaluated steps: 0, 1000, 2000, 3000, 4000)")


def test_piping_into_head_is_quiet(tmp_path):
    command = f"{sys.executable} -m analysis.tables {FIXTURES / 'seed000_sweep'} --no-plots --out {tmp_path} | head -1"
    result = subprocess.run(command, shell=True, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "20 grid points: 20 completed." and result.stderr == ""
    assert (tmp_path / "decision.md").exists()  # the files are written before anything is printed


# ---- plots --------------------------------------------------------------------------------------------------
def test_plots_keep_their_axes_wide_and_label_what_they_draw(tmp_path):
    from analysis.plots import plot_collapse, plot_loss, plot_tokens

    smoothed = [{"step": 0, "loss": None, "unique_tokens": 40, "eval_loss": 6.2},
                {"step": 100, "loss": 5.5, "unique_tokens": 4, "eval_loss": 5.6}]
    sweep_dir = write_sweep(tmp_path / "s", [
        ("arm=plain", {"arm": "plain"}, {"ln_vocab": 6.24, "unigram_entropy": 5.2}, smoothed),
        ("arm=smooth", {"arm": "smooth"}, {"ln_vocab": 6.24, "unigram_entropy": 5.2,
                                           "config": {"train": {"label_smoothing": 0.1}}}, smoothed)])
    sweep = analyse(load_sweeps(sweep_dir))
    ax = plot_loss(sweep).axes[0]
    train = {line.get_label(): line.get_linestyle() for line in ax.get_lines() if line.get_label().startswith("arm=")}
    assert train == {"arm=plain": "-", "arm=smooth (train loss with label smoothing 0.1)": ":"}
    references = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "-."]
    assert references == [6.24, 5.2]  # ln V and the unigram entropy
    assert ax.get_legend().get_bbox_to_anchor().y1 < ax.get_window_extent().y0 + 1  # below the axes
    assert plot_collapse(sweep) is None  # no hidden axis: no empty frame
    # A switch near the right edge: its label is drawn left of the line and kept out of the layout.
    seed001 = analyse(load_sweeps(FIXTURES / "seed001_sweep"))
    fig = plot_tokens(seed001)
    fig.savefig(tmp_path / "tokens.png")
    [label] = [t for t in fig.axes[0].texts if "WD 0.1→0.0" in t.get_text()]
    assert not label.get_in_layout() and label.get_horizontalalignment() == "left"
    axes_width = fig.axes[0].get_position().width
    assert axes_width > 0.85  # the axes keep (nearly) the full figure width


# ---- the investigation's collapse signature -----------------------------------------------------------------
def test_signature_on_the_seeds_figures():
    """Seed 001 (the WD switch releases a 2-token plateau: loss -3 nats, tokens x4-5) and seed 004's standard LR
    (2 tokens while the loss stays within 1 nat of its start) show the signature; reduced LR, which climbs back
    before the end, does not; label smoothing and grad clip have the plateau but no loss to judge it by."""
    seed001 = analyse(load_sweeps(FIXTURES / "seed001_sweep")).tables["signature"][0].set_index("hidden")
    assert seed001["seed signature"].tolist() == ["yes 1/1"] * 4
    assert seed001.loc["256", "release over the window"] == "yes 1/1 (loss -3.02 nats, tokens 2 → 10, step 5000 → 6000)"
    assert seed001.loc["256", "lasting plateau"] == "yes 1/1 (from 3k, 50% of stage 1)"
    seed004 = analyse(load_sweeps(FIXTURES / "seed004_sweep")).tables["signature"][0].set_index("intervention")
    assert seed004["seed signature"].to_dict() == {"standard": "yes 1/1", "reduced_lr": "no 1/1",
                                                   "label_smoothing": "partial 1/1", "grad_clip": "partial 1/1"}
    assert seed004.loc["standard", "loss stalled (near uniform or rising)"].startswith("yes 1/1")
    partial = analyse(load_sweeps(FIXTURES / "partial_sweep")).per_point.set_index("hidden").signature
    assert partial[1024] == "undecided (running)" and partial[1536] == "undecided (missing)"


def test_signature_rule_and_its_thresholds():
    def evaluations(tokens, losses, phases=None, steps=(0, 1000, 2000, 3000, 4000, 5000, 6000)):
        phases = phases or [None] * len(tokens)
        return [{"step": s, "tokens": t, "loss": l, "phase": p} for s, t, l, p in zip(steps, tokens, losses, phases)]

    rules = Rules()
    nan = float("nan")
    seeds = evaluations([20, 19, 9, 2, 2, 2, 10], [10.99, nan, nan, nan, nan, 10.3, 7.3])
    parts = signature_parts(seeds, rules, switch_step=5000)
    assert {k: parts[k] for k in ("plateau", "stalled", "release", "plateau_start", "plateau_share", "release_text")} \
        == {"plateau": "yes", "stalled": "yes", "release": "yes", "plateau_start": 3000, "plateau_share": 0.4,
            "release_text": "loss -3.00 nats, tokens 2 → 10, step 5000 → 6000"}
    assert signature_verdict(parts) == "yes"
    assert signature_verdict(signature_parts(seeds, Rules(signature_share=0.5), switch_step=5000)) == "no"
    assert signature_verdict(signature_parts(seeds, Rules(release_nats=4), switch_step=5000)) == "partial"
    # The same tokens with a loss that falls into the unigram phase on the plateau: not the signature.
    healthy = evaluations([20, 19, 9, 2, 2, 2, 10], [nan] * 7,
                          ["near-uniform", "near-uniform", "unigram", "unigram", "unigram", "contextual", "contextual"])
    assert signature_verdict(signature_parts(healthy, rules, switch_step=5000)) == "no"
    # With ln V known, the loss must stay within --stall-nats of it.
    assert signature_parts(seeds, rules, 5000, ln_vocab=10.82)["stalled"] == "yes"
    assert signature_parts(seeds, Rules(stall_nats=0.4), 5000, ln_vocab=10.82)["stalled"] == "no"


def test_signature_thresholds_are_options(tmp_path):
    out = tables_main(FIXTURES / "seed004_sweep", "--signature-share", 0.3, "--no-plots", "--out", tmp_path).stdout
    assert "lasting at least 0.3 of stage 1" in out
    md = (tmp_path / "signature.md").read_text()
    assert "| standard        | no 1/1" in md  # its plateau is 25% of the run


@pytest.mark.slow
def test_a_preset_sweep_lists_a_point_that_vanished(tmp_path):
    """Presets write their grid as `hidden: ${grid.hiddens}`; grid.json holds the expanded points, so a point
    whose folder is gone is still listed (as missing) and the decision waits for it."""
    sweep_dir = tmp_path / "scaling"
    run_main("-m", "+sweep=scaling", "scale=smoke", "train.steps=10", "eval.every=10", "threads=1",
            f"hydra.sweep.dir={sweep_dir}")
    points = json.loads((sweep_dir / "grid.json").read_text())["points"]
    assert [p["folder"] for p in points] == ["hidden=32", "hidden=64"]
    shutil.rmtree(sweep_dir / "hidden=64")
    result = analyse(load_sweeps(sweep_dir), collapse_steps=(10, 10))
    tables = result.tables
    assert tables["points"][1].status.tolist() == ["completed", "missing"]
    # 10 steps are also too short to class the point that is there: the decision says both
    assert tables["decision"][0].meaning[0].startswith("undecided: waiting for 64 (missing)")
