"""bitnet-diagnose: the pattern of a run, the rule and rows that decide it, the setup check, the ranked causes.

Checked on typed curves (each rule alone), on the seeds' own figures (001's CSVs in their own format, 004's
table), on the committed results (each arm's pattern agrees with docs/findings.md, and the shipped evidence file
is what results/ gives) and on a Hugging Face Trainer run with the Adam slip passed through `optimizers=`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis import diagnose as dg
from analysis.evidence import build_evidence
from analysis.evidence import main as evidence_main
from analysis.patterns import (BRIEF, DIVERGED, FEW_TOKEN_PLATEAU, HEALTHY, PLATEAU, RECOVERED, RELEASED, STALL,
                               TOO_SHORT, UNDECIDED, classify)
from analysis.rules import Rules

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
RESULTS = REPO / "results"
LN_V = math.log(4096)
H1 = 6.05  # about the built-in corpus' unigram entropy at 4096 tokens


def curve(points, phase=None):
    """[(step, tokens, loss)] -> evaluations with the learning phase the loss gives (ln V 8.32, H1 6.05)."""
    rules = Rules()
    return [{"step": s, "tokens": t, "loss": loss, "eval_loss": loss,
             "phase": phase or rules.phase(loss, LN_V, H1)} for s, t, loss in points]


# ---- each rule on a typed curve -----------------------------------------------------------------------------
def test_healthy_and_brief_unigram_phase():
    healthy = classify(curve([(0, 500, 8.3), (100, 40, 6.0), (400, 60, 5.0), (600, 80, 4.6)]), warmup=50)
    assert healthy.name == HEALTHY and healthy.kind == "healthy"
    brief = classify(curve([(0, 500, 8.3), (25, 1, 7.9), (100, 5, 6.0), (200, 12, 5.5), (600, 55, 4.6)]), warmup=50)
    assert brief.name == BRIEF and brief.kind == "healthy"
    assert "up to step 100, within warm-up + 300 = 350" in brief.rule


def test_too_short_diverged_and_undecided():
    short = classify(curve([(0, 500, 8.3), (25, 1, 7.9), (50, 2, 7.5)]), warmup=50)
    assert short.name == TOO_SHORT and short.kind == "inconclusive" and "needs about 350" in short.rule
    blown = classify(curve([(0, 500, 8.3), (100, 3, 7.0), (400, 1, 9.5)]), warmup=50, ln_vocab=LN_V)
    assert blown.name == DIVERGED and blown.kind == "pathology" and "above ln V" in blown.rule
    nan = classify(curve([(0, 500, 8.3), (400, 30, 5.0)]), warmup=50, status="diverged", error="loss is nan at step 410")
    assert nan.name == DIVERGED and "nan at step 410" in nan.rule
    last_only = classify(curve([(0, 500, 8.3), (200, 40, 5.4), (400, 60, 5.0), (600, 9, 5.0)]), warmup=50)
    assert last_only.name == UNDECIDED and "last evaluation only" in last_only.rule


def test_near_uniform_stall_and_its_release_by_a_switch():
    stalled = [(0, 500, 8.3), (25, 1, 7.9)] + [(s, 2, 7.2 + s / 2000) for s in range(100, 625, 100)]
    no_switch = classify(curve(stalled), warmup=50)
    assert no_switch.name == STALL and no_switch.stalled and "loss rose" in no_switch.rule
    released = stalled + [(700, 3, 6.3), (800, 5, 6.0), (1200, 5, 5.7)]
    pattern = classify(curve(released), switches=[(600, "LR 0.0015→0.001 + WD 0.1→0.0")], warmup=50,
                       total_steps=1200)
    assert pattern.name == RELEASED and pattern.switch == (600, "LR 0.0015→0.001 + WD 0.1→0.0")
    assert "step 600 -> 700" in pattern.rule and "it had stalled" in pattern.rule
    assert "still at or below the collapse level at the end (5 tokens)" in pattern.rule
    # the same curve whose loss does not fall after the switch: not released, named by its stall
    flat = stalled + [(700, 2, 7.5), (800, 2, 7.5), (1200, 2, 7.5)]
    kept = classify(curve(flat), switches=[(600, "WD switch")], warmup=50, total_steps=1200)
    assert kept.name == STALL and "did not release it" in kept.notes[0]


def test_unigram_plateau_recovery_and_a_slow_climb():
    plateau = classify(curve([(0, 500, 8.3)] + [(s, 3, 6.5 - s / 100000) for s in range(100, 1300, 100)]), warmup=50)
    assert plateau.name == PLATEAU and plateau.stalled is False
    back = classify(curve([(0, 500, 8.3), (100, 3, 6.5), (500, 2, 6.4), (900, 30, 5.5), (1200, 40, 5.2)]), warmup=50)
    assert back.name == RECOVERED and "above it again from step 900" in back.rule
    # recovered long after a switch that fell inside the collapse: not "without a switch", not a release either
    late = classify(curve([(0, 500, 8.3), (100, 3, 6.5), (500, 2, 6.4), (600, 2, 6.4), (700, 4, 6.3),
                           (1000, 30, 5.5), (1200, 40, 5.2)]), switches=[(600, "LR switch")], warmup=50,
                    total_steps=1200)
    assert late.name == PLATEAU and "later than the release window" in late.notes[-1]
    climbing = classify(curve([(0, 500, 8.3), (100, 1, 5.9), (200, 4, 5.5), (300, 6, 5.3), (400, 8, 5.2)]), warmup=50)
    assert climbing.name == TOO_SHORT and "twice as long, 800 steps" in climbing.rule
    unknown = classify(curve([(0, 20, float("nan")), (1000, 3, float("nan")), (2000, 2, float("nan"))], phase="unknown"))
    assert unknown.name == FEW_TOKEN_PLATEAU and "whether it stalled is unknown" in unknown.rule


# ---- the seeds' own figures ----------------------------------------------------------------------------------
def test_seed_001_csvs_in_their_own_format_are_a_stall_released_by_the_wd_switch(capsys):
    status = dg.main([str(FIXTURES / "seed001_csv"), "--name-pattern", "scale_{hidden}_10k", "--set",
                      "wd.switch_step=5000", "train.steps=10000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["exit_status"] == 1
    assert [r["pattern"] for r in report["runs"]] == [RELEASED] * 4
    for run in report["runs"]:
        assert run["released_by"] == {"step": 5000, "switch": "WD switch"}
        assert run["setup_findings"] is None and run["setup_source"].startswith("unknown: no run.json")
        assert run["causes"][0]["cause"] == "coupled_weight_decay"
        assert "the switch that released it changed WD" in run["causes"][0]["basis"]
        assert "possible: this run's setup is unknown" in run["causes"][0]["basis"]
    scale256 = report["runs"][0]
    assert [(r["step"], r["unique_tokens"], r["loss"]) for r in scale256["evidence_rows"]] == [
        (2000, 8, None), (5000, 2, 10.34), (6000, 10, 7.32), (10000, 13, None)]
    assert "loss -3.02 nats, tokens 2 -> 10" in scale256["rule"]


def test_seed_004_reduced_lr_is_a_collapse_that_recovers_without_a_switch(capsys):
    assert dg.main([str(FIXTURES / "seed004_sweep"), "--json"]) == 1
    runs = {Path(r["folder"]).name: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["intervention=reduced_lr"]["pattern"] == RECOVERED
    assert "at or below 10 tokens from step 1000 to 2000" in runs["intervention=reduced_lr"]["rule"]
    assert "above it again from step 3000 to the end (18 tokens)" in runs["intervention=reduced_lr"]["rule"]
    # the standard run's loss falls 10.99 -> 10.25 on its plateau: within 1 nat of its first loss, a stall by the
    # loss rule (no eval loss, so no phase)
    assert runs["intervention=standard"]["pattern"] == STALL
    assert {runs[k]["pattern"] for k in ("intervention=label_smoothing", "intervention=grad_clip")} == {FEW_TOKEN_PLATEAU}


# ---- the committed results ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_shipped_evidence_and_its_docs_table_are_what_the_committed_results_give(capsys):
    shipped = json.loads(dg.EVIDENCE_FILE.read_text())
    assert build_evidence(RESULTS) == shipped, "stale: run python -m analysis.evidence"
    assert evidence_main(["--check"]) == 0, capsys.readouterr().out
    assert "| with it: torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=0.1) | stall released by a " \
           "switch 3/3; 5 tokens at the end (results/screening_study) |" in (REPO / "docs" / "diagnose.md").read_text()


def test_each_arms_pattern_agrees_with_the_findings():
    arms = dg.load_evidence()
    patterns = {key.split("|")[1]: arm["patterns"] for key, arm in arms.items()}
    # the slip: a stall released by the switch in 3/3 seeds; kept WD through stage 2: never released
    assert patterns["model.quantize_head=False,optim.decay=all,optim.name=adam_l2"] == {RELEASED: 3}
    assert patterns["intervention=no_wd_switch"] == {STALL: 3}
    # AdamW with the same call, the recipe's groups and the corrected script: the normal brief unigram phase
    for healthy in ("model.quantize_head=False,optim.decay=all,optim.name=adamw",
                    "model.quantize_head=False,optim.decay=matrices,optim.name=adamw", "intervention=corrected_code"):
        assert patterns[healthy] == {BRIEF: 3}, healthy
    # the seeds' reduced LR on the slip: no release, still on a unigram plateau at 8-10 tokens
    assert patterns["intervention=reduced_lr"] == {PLATEAU: 3}
    assert arms["fixes_study|intervention=reduced_lr"]["final_tokens"] == [8.0, 10.0]


def test_a_committed_slip_run_names_coupled_decay_from_its_recorded_config(capsys):
    folder = RESULTS / "screening_study" / "model.quantize_head=False,optim.decay=all,optim.name=adam_l2,seed=0"
    assert dg.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "pattern: stall released by a switch [pathology]" in out
    assert "setup check (re-checked from the recorded config (the run predates the setup check)):" in out
    assert "  1. weight decay as coupled L2" in out and "  2. weight decay on the norm gains" in out
    assert "try: decay = [p for n, p in model.named_parameters() if p.dim() >= 2]" in out
    assert out.rstrip().splitlines()[-1].endswith(
        "stall released by a switch (pathology); likely cause: coupled_weight_decay, decay_on_norm_gains")


def test_the_recipe_at_1000_steps_is_healthy_with_no_causes(capsys):
    sweep = RESULTS / "default_model_1000"
    assert dg.main([str(sweep / "optim=adamw,seed=0"), str(sweep / "optim=adamw,seed=1")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"pattern: {BRIEF} [healthy]") == 2 and "setup check: no finding" in out
    assert "likely cause" not in out


# ---- a Hugging Face Trainer run with the slip ------------------------------------------------------------------
def test_hf_trainer_with_the_adam_slip_is_flagged_and_diagnosed(capsys):
    """results/hf_adam_slip: a 600-step GPT-2 run whose optimizer is torch.optim.Adam(model.parameters(),
    weight_decay=0.1) passed through Trainer(optimizers=...), beside the Trainer's own AdamW (run.py there)."""
    slip, control = RESULTS / "hf_adam_slip" / "adam", RESULTS / "hf_adam_slip" / "adamw"
    recorded = json.loads((slip / "run.json").read_text())["setup_findings"]
    assert [f["rule"] for f in recorded][:2] == ["coupled_weight_decay", "decay_on_norm_gains"]
    assert dg.main([str(slip), str(control), "--json"]) == 1
    runs = {Path(r["folder"]).name: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["adam"]["pattern"] == STALL and runs["adam"]["setup_source"] == "recorded by the run"
    assert runs["adam"]["causes"][0]["cause"] == "coupled_weight_decay"
    assert runs["adamw"]["kind"] == "healthy" and runs["adamw"]["causes"] == [] and runs["adamw"]["setup_findings"] == []


# ---- the command ---------------------------------------------------------------------------------------------
def test_bad_input_is_exit_2_with_one_line(tmp_path, capsys):
    assert dg.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitnet-diagnose: error:") and len(err.splitlines()) == 1
    assert dg.main([str(FIXTURES / "seed004_sweep"), "--collapse-level", "-1"]) == 2
    assert "--collapse-level=-1 is not allowed" in capsys.readouterr().err


def test_a_label_from_a_run_folder_cannot_restyle_the_terminal(tmp_path, capsys):
    run = tmp_path / "run\x1b[2Jx"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss,unique_tokens\n0,,20\n500,5.0,40\n1000,4.0,60\n")
    (run / "run.json").write_text(json.dumps({"status": "completed", "setup_findings": [
        {"rule": "coupled_weight_decay", "what": "Adam\x1b]0;owned\x07", "where": "x", "severity": "error"}]}))
    assert dg.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "run?[2Jx" in out


def test_a_sweep_caught_part_way(capsys):
    """partial_sweep: 768 failed at 2k, 1024 still running at 3k, 1536 never started, 2048 diverged."""
    assert dg.main([str(FIXTURES / "partial_sweep")]) == 1
    summary = capsys.readouterr().out.split("summary:\n")[1].splitlines()
    assert "partial_sweep/hidden=768: healthy (healthy, run failed)" in summary[2]
    assert "partial_sweep/hidden=1024: lasting few-token plateau (pathology, run running)" in summary[3]
    assert "partial_sweep/hidden=2048: diverged (pathology, run diverged)" in summary[4]
    assert summary[5].endswith("partial_sweep/hidden=1536: missing (nothing to diagnose)")


@pytest.mark.slow
def test_diagnose_imports_nothing_of_hydra_even_when_it_rechecks_a_setup():
    import subprocess
    import sys

    folder = RESULTS / "fixes_study" / "intervention=standard,seed=0"
    code = (f"import sys, analysis.diagnose as d; d.read_setup({str(folder)!r}); "
            "print('hydra' in {m.split('.')[0] for m in sys.modules})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_a_csv_that_states_no_switch_is_never_said_to_recover_without_one(capsys):
    """seed 001's CSV without --set: it recovers after step 6000, but nothing says whether a schedule switched."""
    assert dg.main([str(FIXTURES / "seed001_csv" / "scale_256_10k.txt"), "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert run["pattern"] == UNDECIDED and "--set lr.switch_step=N / wd.switch_step=N" in run["rule"]
    assert "does not state where its lr and wd schedules switched" in run["rule"]
    assert run["notes"] == ["whether the run finished is unknown (give train.steps): the pattern is the one so far"]
