"""Cases the seeds' tables do not cover, each on run folders typed here (metrics.csv + run.json, as bitnet.probe
writes them; 4096-token vocabulary, ln V = 8.32, unigram entropy 6.05): a near-uniform stall, a unigram plateau
without a switch, seeds that disagree, diverged points, intervals that would go negative, advice from a sweep
that does not vary the LR, recovery after a switch, and runs too short to tell anything."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_sweeps
from analysis.foreign import Labelling
from analysis.rules import UNIGRAM_SPAN, too_short
from analysis.stats import t975
from analysis.core import analyse
from bitnet.phases import DIVERGING, NEAR_UNIFORM, learning_phase
from conftest import REPO_ROOT
from conftest import tables_main

LN_V, H1 = math.log(4096), 6.05
# eval losses in each phase for this vocabulary: near-uniform above 7.18, unigram 5.95-7.18, contextual below
NEAR_UNIFORM_LOSS, UNIGRAM_LOSS, CONTEXTUAL_LOSS = 8.1, 6.1, 5.2


def run_folder(path: Path, rows: list[tuple], labels: dict, *, steps: int | None = None, warmup: int = 50,
               status: str = "completed", config: dict | None = None, wd_switch: int | None = None) -> Path:
    """A run folder: rows are (step, eval_loss, unique_tokens); the training loss is the eval loss."""
    path.mkdir(parents=True)
    lines = ["step,loss,unique_tokens,eval_loss"] + [
        f"{step},{'' if step == 0 else loss},{tokens},{loss}" for step, loss, tokens in rows]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    last = steps or rows[-1][0]
    record = {"status": status, "step": last, "last_step": last, "total_steps": last, "labels": labels,
              "vocab_size": 4096, "ln_vocab": LN_V, "unigram_entropy": H1, "eval_positions": 4096,
              "switch_steps": {"lr": None, "wd": wd_switch},
              "config": {"lr": {"warmup": warmup}, "train": {"steps": last}, **labels, **(config or {})}}
    (path / "run.json").write_text(json.dumps(record))
    return path


def analysed(folder: Path, **kwargs):
    result = analyse(load_sweeps(folder), **kwargs)
    tables = result.tables
    return tables, result


def healthy(final_tokens: int = 60) -> list[tuple]:
    """A 1000-step run that passes the unigram phase and has `final_tokens` predictions from step 400 (the
    collapse table's late step, 40% of the run) to the end."""
    return [(0, LN_V, 500), (100, UNIGRAM_LOSS, 4), (200, CONTEXTUAL_LOSS, 20), (400, 4.9, final_tokens),
            (1000, 4.6, final_tokens)]


# ---- stalls ---------------------------------------------------------------------------------------------------
def test_a_near_uniform_stall_is_reported_as_a_plateau_in_that_phase(tmp_path):
    rows = [(0, LN_V, 500)] + [(s, NEAR_UNIFORM_LOSS, 2) for s in range(100, 1001, 100)]
    run_folder(tmp_path / "stall", rows, {"hidden": 64})
    tables, _ = analysed(tmp_path / "stall")
    trajectory = tables["trajectory"][0].iloc[0]
    assert trajectory["longest plateau"] == "100-1k (900 steps), near-uniform"
    assert trajectory.trajectory == "collapsed and stayed" and trajectory.final == "2, near-uniform"


def test_a_unigram_plateau_without_a_switch_is_reported_not_no_plateau(tmp_path):
    rows = [(0, LN_V, 500), (100, 6.2, 3), (200, 6.1, 3), (300, 6.1, 2), (400, 6.0, 3), (500, 6.0, 4),
            (600, CONTEXTUAL_LOSS, 25), (1000, 4.6, 60)]
    run_folder(tmp_path / "plateau", rows, {"hidden": 64})
    tables, _ = analysed(tmp_path / "plateau")
    trajectory = tables["trajectory"][0].iloc[0]
    assert trajectory["longest plateau"] == "100-500 (400 steps), unigram"  # no switch ends it, it is still shown
    assert trajectory.trajectory == "collapsed and recovered"
    assert "whether or not a switch ends it" in " ".join(tables_notes(tmp_path / "plateau", "trajectory"))


def tables_notes(folder: Path, name: str) -> list[str]:
    return analysed(folder)[1].notes[name]


# ---- seeds that disagree ------------------------------------------------------------------------------------
@pytest.fixture
def split_seeds(tmp_path) -> Path:
    """hidden=64 with three seeds ending at 1, 207 and 249 tokens (mean 152: "acceptable" if read off the mean),
    and hidden=128 whose three seeds agree (300, 320, 340)."""
    root = tmp_path / "runs"
    for hidden, finals in ((64, (1, 207, 249)), (128, (300, 320, 340))):
        for seed, final in enumerate(finals):
            run_folder(root / f"h{hidden}s{seed}", healthy(final), {"hidden": hidden, "seed": seed})
    return root


def test_seeds_that_disagree_are_classed_each_never_from_the_mean(split_seeds):
    tables, result = analysed(split_seeds)
    collapse = tables["collapse"][0].set_index("hidden")
    assert collapse.loc["64", "final status"] == "complete collapse (❌ Failed) 1/3, acceptable (✅ Working) 2/3"
    assert collapse.loc["128", "final status"] == "acceptable (✅ Working)"
    decision = tables["decision"][0].iloc[0]
    assert decision.outcome == "undecided"
    assert decision.meaning == ("undecided: seeds disagree at 64 (1, 207, 249 tokens: collapsed 1/3, "
                                "diverse (>100) 2/3)")


def test_intervals_never_reach_below_zero_and_say_when_they_were_cut(split_seeds):
    tables, result = analysed(split_seeds)
    md, csv = tables["collapse"]
    row = csv.set_index("hidden").loc[64]
    assert row.final_tokens == pytest.approx(457 / 3)
    assert row.final_tokens_lo == 0 and bool(row.final_tokens_clipped)  # the t interval's low end is -187
    half = t975(2) * statistics.stdev([1, 207, 249]) / math.sqrt(3)
    assert md.set_index("hidden").loc["64", "final tokens"] == f"152.3 [0†, {457 / 3 + half:.1f}]"
    assert any(note.startswith("0† = the 95% interval reached below 0") for note in result.notes["collapse"])
    for name, (_, frame) in tables.items():  # no count or step anywhere below 0
        for column in [c for c in frame.columns if str(c).endswith("_lo")]:
            if f"{column[:-3]}_clipped" in frame:
                assert (pd.to_numeric(frame[column], errors="coerce").dropna() >= 0).all(), (name, column)
    agree = csv.set_index("hidden").loc[128]
    assert not agree.final_tokens_clipped and agree.final_tokens_lo == pytest.approx(320 - t975(2) * 20 / math.sqrt(3))


# ---- diverged points ----------------------------------------------------------------------------------------
def test_a_loss_above_ln_v_is_diverging_and_the_point_is_listed_apart(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        run_folder(root / f"adamw{seed}", healthy(60), {"optim": "adamw", "seed": seed})
    run_folder(root / "sgd0", healthy(3), {"optim": "sgd", "seed": 0})
    blown = [(0, LN_V, 500), (100, UNIGRAM_LOSS, 4), (200, 8.9, 2), (300, 9.4, 1), (1000, 9.9, 1)]
    run_folder(root / "sgd1", blown, {"optim": "sgd", "seed": 1})
    assert learning_phase(8.9, LN_V, H1) == DIVERGING and learning_phase(8.3, LN_V, H1) == NEAR_UNIFORM
    tables, result = analysed(root)
    curve = result.curves[(str(root), "optim=sgd,seed=1")]
    assert curve.phase.tolist() == ["near-uniform", "unigram", DIVERGING, DIVERGING, DIVERGING]
    pp = result.per_point.set_index("point")
    reason = "diverged: eval loss 8.90 at step 200, above ln V = 8.32"
    assert pp.loc["optim=sgd,seed=1", "trajectory"] == reason and pp.loc["optim=sgd,seed=1", "signature"] == reason
    assert pd.isna(pp.loc["optim=sgd,seed=1", "final_tokens"])  # no "ends collapsed" from a blown-up run
    assert result.interventions_summary == [
        "Only adamw avoids ending collapsed; sgd ends collapsed; diverged: sgd (1/2 seeds) (ends collapsed = at most 10 "
        "unique tokens at the last evaluation; diverged seeds are listed apart, not judged)"]
    trajectory = tables["trajectory"][0].set_index("optim")
    assert trajectory.loc["sgd", "trajectory"] == f"collapsed and stayed 1/2, {reason} 1/2"
    assert any(note.startswith("Not classed: diverged = ") for note in result.notes["trajectory"])
    assert result.per_point_diagnostics.set_index("point").loc["optim=sgd,seed=1", "verdict@deepest"] == reason


def test_a_foreign_nan_loss_is_a_diverged_run_not_an_empty_cell(tmp_path):
    path = tmp_path / "scale_256_10k.txt"
    path.write_text("Step,Loss,Unique Tokens\n1000,10.9,20\n2000,,6\n3000,nan,2\n4000,nan,1\n")
    sweep = load_sweeps([path], labelling=Labelling(pattern="scale_{hidden}_{train.steps}"))
    point = sweep.points.iloc[0]
    assert point.status == "diverged" and point.error == "diverged: loss nan at step 3000"
    tables = analyse(sweep).tables
    assert tables["trajectory"][0].trajectory[0] == "diverged (diverged: loss nan at step 3000)"


# ---- advice and recovery ------------------------------------------------------------------------------------
def test_a_sweep_over_width_alone_gives_no_lr_advice(tmp_path):
    for hidden in (64, 128, 256):
        run_folder(tmp_path / "width" / f"h{hidden}", healthy(3), {"hidden": hidden})
    decision = analysed(tmp_path / "width")[0]["decision"][0].iloc[0]
    assert decision.outcome == "B" and "LR" in decision.meaning
    assert "adjust the LR" not in decision.meaning
    assert decision.meaning.endswith("this sweep does not vary the LR, so it cannot say whether another LR would help")
    for hidden in (64, 128, 256):
        run_folder(tmp_path / "both" / f"h{hidden}", healthy(3), {"hidden": hidden, "lr.peak": 0.001},
                   config={"lr": {"warmup": 50, "peak": 0.001}})
        run_folder(tmp_path / "both" / f"h{hidden}lr", healthy(3), {"hidden": hidden, "lr.peak": 0.003},
                   config={"lr": {"warmup": 50, "peak": 0.003}})
    decisions = analysed(tmp_path / "both")[0]["decision"][0]
    assert len(decisions) == 2 and all("adjust the LR (the LR is varied here" in m for m in decisions.meaning)


def test_recovery_in_stage_2_means_above_the_collapse_level(tmp_path):
    for name, after in (("still", 5), ("back", 14)):
        rows = [(0, LN_V, 500), (100, UNIGRAM_LOSS, 3), (500, UNIGRAM_LOSS, 2), (600, CONTEXTUAL_LOSS, after),
                (1000, 4.6, after)]
        run_folder(tmp_path / "runs" / name, rows, {"run": name}, wd_switch=500)
    tables, _ = analysed(tmp_path / "runs")
    size = tables["size"][0].set_index("run")
    assert size.loc["still", "recovery in S2"] == "✗ (to 5)"  # 2 -> 5: more than the minimum, still collapsed
    assert size.loc["back", "recovery in S2"] == "✓ (to 14)"


# ---- runs too short to tell ---------------------------------------------------------------------------------
def test_a_run_three_steps_past_warm_up_is_too_short_to_tell(tmp_path):
    """The card's command run for 30 steps with a 27-step warm-up: near-uniform, 2 tokens. No class, trajectory,
    decision or diagnostic verdict; the reason printed instead, the rule beside it."""
    needs = 27 + UNIGRAM_SPAN
    for hidden in (64, 128):
        run_folder(tmp_path / "short" / f"h{hidden}", [(0, LN_V, 500), (10, 8.2, 3), (20, 8.0, 2), (30, 7.9, 2)],
                   {"hidden": hidden}, warmup=27)
    tables, result = analysed(tmp_path / "short")
    reason = f"too short to tell: 30 steps, needs about {needs}"
    assert set(tables["collapse"][0]["final status"]) == {reason}
    assert set(tables["collapse"][0]["class"]) == {reason}
    assert set(tables["trajectory"][0].trajectory) == {reason}
    assert set(tables["signature"][1].signature) == {f"{reason} 1/1"}
    decision = tables["decision"][0].iloc[0]
    assert decision.outcome == "undecided" and decision.meaning == f"undecided: 64 ({reason}); 128 ({reason})"
    assert set(result.per_point_diagnostics["verdict@final"]) == {reason}
    assert "failed" not in tables["collapse"][0].to_string().lower()
    note = result.notes["collapse"][0]
    assert note.startswith("Not classed: too short to tell = the run stops within its LR warm-up, or before warm-up "
                           f"+ {UNIGRAM_SPAN} steps")
    text = tables_main(tmp_path / "short", "--no-plots", "--out", tmp_path / "out").stdout
    assert reason in text and "complete collapse" not in text


def test_a_short_run_that_reached_the_contextual_phase_is_judged(tmp_path):
    run_folder(tmp_path / "quick", [(0, LN_V, 500), (100, UNIGRAM_LOSS, 4), (200, CONTEXTUAL_LOSS, 6)], {"hidden": 64})
    pp = analysed(tmp_path / "quick")[1].per_point.iloc[0]
    assert pp.too_short == "" and pp.trajectory == "collapsed and stayed"
    run_folder(tmp_path / "warmup", [(0, LN_V, 500), (40, CONTEXTUAL_LOSS, 6)], {"hidden": 64}, warmup=50)
    assert analysed(tmp_path / "warmup")[1].per_point.iloc[0].too_short == \
        f"too short to tell: 40 steps, needs about {50 + UNIGRAM_SPAN}"  # still in warm-up, whatever its phase


def test_the_span_comes_from_the_committed_runs():
    """UNIGRAM_SPAN is four times what the committed runs of the faithful default recipe (64 wide, warm-up 50) need
    after their warm-up to leave the unigram phase; every committed run is long enough to be judged."""
    spans = []
    for record_path in (REPO_ROOT / "results").glob("*/*/run.json"):
        record = json.loads(record_path.read_text())
        metrics = pd.read_csv(record_path.parent / "metrics.csv")
        phases = [(s, learning_phase(l, math.log(record["vocab_size"]), record["unigram_entropy"]))
                  for s, l in zip(metrics.step, metrics.eval_loss)]
        warmup = record["config"]["lr"]["warmup"]
        assert not too_short(phases[-1][0], warmup, phases[-1][1]), record_path
        if record_path.parent.name in ("seed=0,suspect=faithful", "seed=1,suspect=faithful", "seed=2,suspect=faithful",
                                       "optim=adamw,seed=0", "optim=adamw,seed=1", "optim=adamw,seed=2"):
            spans.append(next(s for s, p in phases if p == "contextual") - warmup)
    assert len(spans) == 6 and max(spans) == 75 and UNIGRAM_SPAN == 4 * max(spans)


def test_points_that_differ_only_in_a_preset_grid_value_are_seeds_of_one_cell(tmp_path):
    """A scale that gained a `grid.*` value between two launches of one sweep (grid.wide_hidden 256, then 128)
    changes nothing the runs compute: their seeds stay one cell, and no grid.* column becomes a cell key."""
    sweep = tmp_path / "sweep"
    for arm, seed, wide in (("standard", 0, 256), ("standard", 1, 128), ("standard", 2, 128), ("wider", 0, 128)):
        point = run_folder(sweep / f"intervention={arm},seed={seed}", healthy(), {},
                           config={"seed": seed, "grid": {"wide_hidden": wide, "hidden": 64}})
        (point / ".hydra").mkdir()
        (point / ".hydra" / "overrides.yaml").write_text(f"- intervention={arm}\n- seed={seed}\n")
    tables, result = analysed(sweep)
    assert result.keys == ["intervention"]
    assert not [c for c in load_sweeps(sweep).points.columns if str(c).startswith("grid.")]


def test_a_short_few_token_stretch_is_no_lasting_plateau_and_shows_no_share(tmp_path):
    """Few tokens only at the last stage-1 evaluation (5% of stage 1, under the 0.2 rule): the lasting plateau is
    "no", with no start or share printed (they belong to a plateau that lasts)."""
    rows = [(0, LN_V, 500), (100, UNIGRAM_LOSS, 30), (200, CONTEXTUAL_LOSS, 40), (300, 5.1, 45), (380, 5.0, 3),
            (400, 5.0, 3), (500, 4.9, 40), (800, 4.8, 50)]
    sweep = tmp_path / "sweep"
    for arm in ("a", "b"):
        point = run_folder(sweep / f"arm={arm}", rows, {}, wd_switch=400, config={"arm": arm})
        (point / ".hydra").mkdir()
        (point / ".hydra" / "overrides.yaml").write_text(f"- arm={arm}\n")
    tables, _ = analysed(sweep)
    markdown, table = tables["signature"]
    assert list(markdown["lasting plateau"]) == ["no 1/1", "no 1/1"]
    assert table.signature_plateau_start.isna().all()
