"""The signature's parts as numbers (release over a window after the switch, a plateau whose loss rises), the
two-level factorial effects table and the phase map, on sweeps typed by hand so every expected number is
computed here from the typed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import load_sweeps
from analysis.factorial import NotFactorial, design
from analysis.phase_map import plot_phase_map
from analysis.release import signature_numbers
from analysis.rules import Rules, signature_parts, signature_verdict
from analysis.stats import t975
from analysis.core import analyse
from conftest import REPO_ROOT, analysis_main

LN_V, H1 = 8.32, 6.05   # the pilot's vocabulary (ln 4096) and unigram entropy: near-uniform above 7.185


def run_rows(plateau_start: int, rise: float, drop: float, final_loss: float, final_tokens: int,
             level: float = 6.5, every: int = 20, steps: int = 200) -> list[dict]:
    """Evaluations every `every` steps of a `steps`-step run switching at the midpoint: 50 tokens, then 1 from
    `plateau_start` to the switch; eval loss 8.0 at step 0, `level` on stage 1, `level + rise` at the switch,
    `drop` lower at the switch + a tenth of the run, then `final_loss` with `final_tokens` at the end."""
    switch = steps // 2
    rows = []
    for step in range(0, steps + 1, every):
        if step <= switch:
            tokens = 1 if step >= plateau_start else 50
            loss = 8.0 if step == 0 else level + rise if step == switch else level
        else:
            tokens = 30 if step < steps else final_tokens
            loss = level + rise - drop if step < steps else final_loss
        rows.append({"step": step, "loss": loss, "eval_loss": loss, "unique_tokens": tokens})
    return rows


def write_sweep(sweep_dir: Path, points: list[tuple[list[str], dict, list[dict], str]], steps: int = 200) -> Path:
    """A sweep folder as the sweeper leaves it: grid.json in declared order, one folder per point (overrides,
    run.json, metrics.csv); a point without rows has no folder (never started)."""
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    grid = []
    for overrides, config, rows, status in points:
        name = ",".join(overrides)
        grid.append({"overrides": overrides, "folder": name})
        if not rows:
            continue
        folder = sweep_dir / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
        (folder / "run.json").write_text(json.dumps({
            "status": status, "last_step": rows[-1]["step"], "total_steps": steps, "ln_vocab": LN_V,
            "unigram_entropy": H1, "eval_positions": 256, "switch_steps": {"lr": steps // 2, "wd": steps // 2},
            "config": {**config, "train": {"steps": steps}}}))
    (sweep_dir / "grid.json").write_text(json.dumps({"points": grid}))
    return sweep_dir


# ---- the release window and the rising stall ------------------------------------------------------------------
def test_release_is_read_a_window_after_the_switch():
    rows = [{"step": s, "tokens": 1 if 25 <= s <= 400 else 40, "loss": 6.9 - 0.001 * (s - 400) if s > 400
             else 6.5 + 0.001 * s, "phase": "unigram"} for s in range(0, 801, 25)]
    numbers = signature_numbers(rows, 400, 800, plateau_tokens=5, window_share=0.1)
    # window 80 steps: the evaluation nearest 480 is 475 (5 away; 500 is 20 away); the loss before is step 400's
    assert (numbers["window"], numbers["before_step"], numbers["after_step"]) == (80, 400, 475)
    assert numbers["release_drop"] == pytest.approx(0.075)
    assert numbers["plateau_fraction"] == pytest.approx(375 / 400) and numbers["plateau_phase"] == "unigram"
    assert numbers["stage1_rise"] == pytest.approx(0.4 - 0.0)  # 6.9 at the switch, 6.5 at step 0
    assert numbers["plateau_rise"] == pytest.approx(0.375)    # lowest on the plateau: step 25's 6.525
    # a window of 0 is the first evaluation after the switch (the old rule)
    assert signature_numbers(rows, 400, 800, plateau_tokens=5, window_share=0)["after_step"] == 425


def test_a_run_that_ends_before_the_window_has_an_undecided_release():
    rows = [{"step": s, "tokens": 1 if s >= 25 else 40, "loss": 8.2, "phase": "near-uniform"}
            for s in range(0, 451, 25)]
    parts = signature_parts(rows, Rules(), switch_step=400, total_steps=800)
    assert parts["release"] == "unknown"
    assert parts["release_text"] == ("undecided, because the evaluations stop at step 450, before switch + window "
                                     "= 400 + 80 = 480")
    assert signature_verdict(parts) == "yes"  # plateau and stall shown; the release is not a "no"
    assert signature_parts(rows, Rules(release_window=0.05), 400, total_steps=800)["release"] == "no"


def test_a_plateau_whose_loss_rises_has_stalled():
    """The pilot's pattern: 1 token from step 25 to the switch at 400 while the eval loss rises 6.53 -> 6.90 in
    the unigram phase (ln V 8.32, H1 6.05: near-uniform only above 7.185); after the switch it falls 1.05 nats
    over the window and tokens grow 1 -> 40."""
    def loss(s):
        return 6.53 + (6.90 - 6.53) * (s - 25) / 375 if 25 <= s <= 400 else 8.3 if s == 0 else 6.90 - 1.05
    rows = [{"step": s, "tokens": 1 if 25 <= s <= 400 else 40, "loss": loss(s), "phase": "unigram"}
            for s in range(0, 801, 25)]
    parts = signature_parts(rows, Rules(), switch_step=400, total_steps=800)
    assert (parts["plateau"], parts["stalled"], parts["release"]) == ("yes", "yes", "yes")
    assert parts["stalled_text"] == "loss +0.37 nats on it"
    assert signature_verdict(parts) == "yes"
    # a rise below --stall-rise: the unigram-phase plateau is then not a stall
    assert signature_parts(rows, Rules(stall_rise=0.5), switch_step=400, total_steps=800)["stalled"] == "no"


def test_release_window_and_stall_rise_are_options(tmp_path):
    sweep = write_sweep(tmp_path / "one", [(["seed=0"], {"seed": 0}, run_rows(20, 0.4, 1.2, 5.0, 90), "completed")])
    out = analysis_main("analysis.tables", sweep, "--no-plots", "--out", tmp_path / "a", "--release-window", 0.3).stdout
    assert "evaluation nearest switch + 0.3 of the run's total steps" in out and "at least 0.1 nats above" in out
    csv = pd.read_csv(tmp_path / "a" / "signature.csv")
    assert csv.signature_release[0] == "yes 1/1"  # the window's evaluation: step 100 + 0.3 x 200 = 160
    assert csv.signature_release_text[0] == "loss -1.20 nats, tokens 1 → 30, step 100 → 160"
    bad = analysis_main("analysis.tables", sweep, "--release-window", 1.5, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: --release-window=1.5 is not allowed: use a share in "
                                                          "[0, 1]")
    report = analysis_main("analysis.document", sweep, "--only", "signature", "--stall-rise", 0.5, "--out", tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "with `--stall-rise 0.5`" in text and "| no 1/1 " in text and report.returncode == 0
    assert "no 1/1 (loss +0.40 nats on it)" in text  # the rise, 0.4, is below 0.5 and the phase is unigram


# ---- the factorial effects --------------------------------------------------------------------------------------
# plateau start per seed (share of stage 1 = (100 - start) / 100), stage-1 rise per seed, by (optim.name, decay)
FACTORIAL = {("adamw", "matrices"): ([100, 80], [0.0, 0.0]), ("adam_l2", "matrices"): ([80, 60], [0.0, 0.2]),
             ("adamw", "all"): ([80, 80], [0.1, 0.1]), ("adam_l2", "all"): ([20, 40], [0.4, 0.6])}


def factorial_sweep(path: Path, skip=(), running=(), cut=()) -> Path:
    points = []
    for (name, decay), (starts, rises) in FACTORIAL.items():
        for seed, (start, rise) in enumerate(zip(starts, rises)):
            overrides = [f"optim.name={name}", f"optim.decay={decay}", f"seed={seed}"]
            rows = [] if (name, decay) in skip else run_rows(start, rise, 1.0, 5.0 + rise, 100 - start)
            rows = [r for r in rows if r["step"] <= 100] if (name, decay) in cut else rows  # ends at the switch
            status = "running" if (name, decay) in running else "completed"
            points.append((overrides, {"seed": seed, "optim": {"name": name, "decay": decay}}, rows, status))
    return write_sweep(path, points)


def hand_effects(values: dict) -> dict:
    """Main effects and the interaction of the 2x2 from the cell means, with the pooled-variance interval."""
    means = {c: sum(v) / len(v) for c, v in values.items()}
    a = ("adam_l2", "matrices"), ("adam_l2", "all")
    a0 = ("adamw", "matrices"), ("adamw", "all")
    b = ("adamw", "all"), ("adam_l2", "all")
    b0 = ("adamw", "matrices"), ("adam_l2", "matrices")
    effect = {"A": (means[a[0]] + means[a[1]]) / 2 - (means[a0[0]] + means[a0[1]]) / 2,
              "B": (means[b[0]] + means[b[1]]) / 2 - (means[b0[0]] + means[b0[1]]) / 2}
    effect["AB"] = ((means[a[1]] - means[a0[1]]) - (means[a[0]] - means[a0[0]])) / 2
    ss = sum((x - means[c]) ** 2 for c, v in values.items() for x in v)
    df = sum(len(v) for v in values.values()) - 4
    half = t975(df) * math.sqrt(ss / df * sum(0.5 ** 2 / len(v) for v in values.values()))
    return {k: (e, e - half, e + half) for k, e in effect.items()}


def test_effects_of_a_typed_2x2_factorial(tmp_path):
    sweep = load_sweeps(factorial_sweep(tmp_path / "fact"))
    result = analyse(sweep)
    tables = result.tables
    csv = tables["effects"][1].set_index("effect")
    shares = {c: [(100 - s) / 100 for s in v[0]] for c, v in FACTORIAL.items()}
    rises = {c: v[1] for c, v in FACTORIAL.items()}
    names = {"A": "optim.name: adamw → adam_l2", "B": "optim.decay: matrices → all", "AB": "optim.name x optim.decay"}
    for column, values in (("signature_plateau_fraction", shares), ("signature_stage1_rise", rises)):
        for key, (est, lo, hi) in hand_effects(values).items():
            row = csv.loc[names[key]]
            assert (row[column], row[f"{column}_lo"], row[f"{column}_hi"]) == pytest.approx((est, lo, hi)), key
            assert row[f"{column}_df"] == 4
    # by hand: share means 0.1, 0.3, 0.2, 0.7 -> A = 0.35, B = 0.25, AB = 0.15; pooled s2 = 0.06 / 4
    assert csv.loc[names["A"], "signature_plateau_fraction"] == pytest.approx(0.35)
    assert csv.loc[names["AB"], "signature_plateau_fraction"] == pytest.approx(0.15)
    half = 2.776 * math.sqrt(0.015 * 4 * 0.25 / 2)
    assert csv.loc[names["B"], "signature_plateau_fraction_hi"] == pytest.approx(0.25 + half)
    # every run's release is 1.0 nats and its final loss is 5 + its rise: no effect on the first, the rise's on the second
    assert csv.signature_release_drop.tolist() == pytest.approx([0, 0, 0], abs=1e-12)
    assert csv.final_eval_loss.tolist() == pytest.approx(csv.signature_stage1_rise.tolist())
    notes = " ".join(result.notes["effects"])
    assert "the full 2^2 factorial" in notes and "N = 8" in notes and "df = N - cells = 4" in notes
    md = tables["effects"][0]
    assert md.loc[0, "plateau share of stage 1"] == "+0.350 [+0.110, +0.590]"


def test_a_half_fraction_states_its_aliases(tmp_path):
    """The 2^(3-1) fraction I = A x B x C: A is aliased with B x C, and its estimate uses the four cells."""
    cells = {(-1, -1, 1): 0.2, (1, -1, -1): 0.6, (-1, 1, -1): 0.4, (1, 1, 1): 0.8}
    points = []
    for (a, b, c), share in cells.items():
        for seed, wobble in enumerate((-0.2, 0.2)):
            start = round(100 * (1 - share - wobble))  # evaluations every 20 steps: shares in steps of 0.2
            overrides = [f"hidden={64 if a > 0 else 32}", f"optim.decay={'all' if b > 0 else 'matrices'}",
                         f"model.quant={'ternary' if c > 0 else 'none'}", f"seed={seed}"]
            points.append((overrides, {"seed": seed}, run_rows(start, 0.0, 1.0, 5.0, 50), "completed"))
    sweep = load_sweeps(write_sweep(tmp_path / "half", points))
    result = analyse(sweep)
    tables = result.tables
    csv = tables["effects"][1].set_index("effect")
    assert csv.loc["hidden: 32 → 64", "aliases"] == "optim.decay x model.quant"
    assert csv.loc["hidden x optim.decay", "aliases"] == "model.quant"
    assert csv.loc["hidden: 32 → 64", "signature_plateau_fraction"] == pytest.approx((0.6 + 0.8 - 0.2 - 0.4) / 2)
    assert "a regular 2^(3-1) fraction, defining relation I = hidden x optim.decay x model.quant, resolution III" \
        in " ".join(result.notes["effects"])


def test_missing_or_unfinished_cells_are_refused_by_name(tmp_path):
    missing = analyse(load_sweeps(factorial_sweep(tmp_path / "m", skip=[("adam_l2", "all")])))
    assert missing.why_empty["effects"] == ("no completed point yet in 1 of the 4 cells: optim.name=adam_l2, "
                                               "optim.decay=all (missing)")
    running = analyse(load_sweeps(factorial_sweep(tmp_path / "r", running=[("adamw", "all")])))
    assert running.why_empty["effects"].endswith("optim.name=adamw, optim.decay=all (running)")
    # three cells on disk and no grid.json: not a factorial, and the lacking cell is named
    sweep = factorial_sweep(tmp_path / "d", skip=[("adam_l2", "all")])
    (sweep / "grid.json").unlink()
    pp = analyse(load_sweeps(sweep)).per_point
    with pytest.raises(NotFactorial, match="missing: optim.name=adam_l2, optim.decay=all$"):
        design(pp, ["optim.name", "optim.decay"])


def test_a_response_without_a_value_in_a_cell_is_undecided(tmp_path):
    """Runs of one cell end at the switch: their release is unknown, so the release column has no effects and
    the note says why; the other responses keep theirs."""
    result = analyse(load_sweeps(factorial_sweep(tmp_path / "c", cut=[("adamw", "all")])))
    tables = result.tables
    csv = tables["effects"][1]
    assert csv.signature_release_drop.isna().all() and csv.signature_plateau_fraction.notna().all()
    assert ("release over the window (nats): undecided, because no completed point has a value in "
            "optim.name=adamw, optim.decay=all (e.g. runs that end before switch + window).") in result.notes["effects"]
    assert tables["effects"][0]["release over the window (nats)"].tolist() == ["–"] * 3


def test_effects_from_the_commands(tmp_path):
    sweep = factorial_sweep(tmp_path / "fact")
    analysis_main("analysis.tables", sweep, "--no-plots", "--out", tmp_path / "t")
    assert "optim.name x optim.decay" in (tmp_path / "t" / "effects.md").read_text()
    assert len(pd.read_csv(tmp_path / "t" / "effects.csv")) == 3
    doc = tmp_path / "findings.md"
    doc.write_text(f"Prose.\n\n<!-- generated: fact --only effects --level 3 -->\n<!-- end generated -->\n")
    analysis_main("analysis.document", "--update", doc)
    text = doc.read_text()
    assert "### Factorial effects on the collapse signature's parts" in text and "+0.350 [+0.110, +0.590]" in text
    assert analysis_main("analysis.document", "--update", doc, "--check").returncode == 0


# ---- the phase map ----------------------------------------------------------------------------------------------
def phase_map_sweeps(tmp_path: Path) -> list[Path]:
    """Two sweeps around the centre hidden=64, data.vocab_size=4096: one over hidden (32, 64, 128), one over the
    vocabulary (2048, 8192); two seeds each. Wider models plateau less; a larger vocabulary plateaus near-uniform."""
    def point(hidden, vocab, seed, start, level, drop):
        overrides = [f"hidden={hidden}", f"data.vocab_size={vocab}", f"seed={seed}"]
        return overrides, {"seed": seed, "hidden": hidden, "data": {"vocab_size": vocab}}, \
            run_rows(start, 0.2, drop, 5.0, 80, level=level), "completed"
    widths = [point(h, 4096, seed, start, 6.5, drop) for h, starts, drop in
              ((32, (20, 40), 1.5), (64, (40, 40), 1.0), (128, (100, 100), 0.1)) for seed, start in enumerate(starts)]
    vocab = [point(64, v, seed, 20, level, 2.0) for v, level in ((2048, 6.5), (8192, 7.9)) for seed in (0, 1)]
    return [write_sweep(tmp_path / "width", widths), write_sweep(tmp_path / "vocab", vocab)]


def test_phase_map_table_and_plot(tmp_path):
    sweeps = phase_map_sweeps(tmp_path)
    result = analyse(load_sweeps(sweeps))
    tables = result.tables
    md, csv = tables["phase_map"]
    rows = {(r.axis, r.value): r for _, r in csv.iterrows()}
    assert set(rows) == {("hidden", 32), ("hidden", 64), ("hidden", 128), ("data.vocab_size", 2048),
                         ("data.vocab_size", 4096), ("data.vocab_size", 8192)}
    assert rows[("hidden", 32)].plateau_share == pytest.approx(0.7)  # (80 + 60) / 2 / 100
    assert rows[("hidden", 128)].plateau_phase == "none" and rows[("hidden", 128)].plateau_share == 0
    assert rows[("data.vocab_size", 8192)].plateau_phase == "near-uniform"
    assert rows[("hidden", 64)].release == pytest.approx(1.0) and rows[("hidden", 64)].centre
    assert rows[("data.vocab_size", 4096)].plateau_steps == 60  # the centre is on both axes
    shown = md.set_index(["axis", "value"])
    assert shown.loc[("hidden", "64 (centre)"), "tokens before → after"] == "1 → 30"
    assert shown.loc[("hidden", "32"), "seeds"] == "2/2"
    assert "Centre: hidden=64, data.vocab_size=4096" in result.notes["phase_map"][0]
    fig = plot_phase_map(result.per_point, result.keys)
    assert len(fig.axes) == 2 and [ax.get_xlabel() for ax in fig.axes] == ["hidden (centre dotted)",
                                                                         "data.vocab_size (centre dotted)"]
    assert "↓1.50 nats\n1→30 tok" in [t.get_text() for t in fig.axes[0].texts]
    out = tmp_path / "out"
    analysis_main("analysis.tables", *sweeps, "--out", out)
    assert (out / "phase_map.png").stat().st_size > 10_000 and (out / "phase_map.csv").exists()


def test_phase_map_refuses_a_factorial_and_text_axes(tmp_path):
    result = analyse(load_sweeps(factorial_sweep(tmp_path / "f")))
    assert result.why_empty["phase_map"] == "needs numeric axes: optim.name, optim.decay takes values that are " \
                                               "not numbers"
