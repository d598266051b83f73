"""The tables: per-point measures (analysis.measures) aggregated over seeds into markdown and CSV frames.

  points        every grid point with its status (missing, running, failed... are listed, never dropped)
  results       unique tokens at chosen steps, the LR/WD switch marked (values after it bold)
  transition    loss, tokens and learning phase at the last evaluation before / first after each switch
  size          parameters, lowest tokens before the switch (and its phase), tokens after it, final tokens
  collapse      tokens(LATE) / tokens(EARLY) with its class, the token-count status class and the phase
  trajectory    per cell: first collapse, minimum, recovery factor, loss during the collapse, trajectory class
  interventions one row per arm of a sweep over anything but size: trajectory, minimum, final tokens and phase
  signature     per cell: the investigation's collapse signature (yes / partial / no, k/n seeds) and its parts
  decision      over hidden sizes: A scaling fixes it, B no threshold, C mixed, or undecided (what it waits for)
  factorial     LR switch x WD switch: main effects and interaction on final tokens and eval loss
  diagnostics   the collapse diagnostics at each point's deepest collapse and final evaluation, with a verdict
  effects       two-level factorial (each swept key two values): main effects and two-way interactions on the
                signature's parts and the final loss and tokens (analysis/factorial.py)
  phase_map     one numeric key varied at a time around a centre: the plateau's phase, length and release per
                axis value (analysis/phase_map.py)

With several seeds per cell every number is the mean over seeds with its 95% t interval [lo, hi]; the CSVs
carry the mean, <col>_lo and <col>_hi, and n. `build_tables` also returns the notes printed under each
table: the rule behind every class and verdict in it. The command: `python -m analysis.tables SWEEP_DIR`
(analysis/report.py).
"""

from __future__ import annotations

import sys

import pandas as pd

from analysis.cells import CLIPPED_NOTE, cells, keys_display, per_cell, tokens_with_phase, verdicts_over_seeds
from analysis.factorial import NotFactorial, effects_table
from analysis.fmt import NA, fmt_cell, fmt_int, fmt_value, step_label, untrusted
from analysis.load import Sweep
from analysis.measures import (DIAGNOSTICS, cell_keys, data_errors, default_collapse_steps, default_steps,
                               evaluated_steps, per_point, per_point_diagnostics, per_transition, point_curves,
                               present_diagnostics)
from analysis.phase_map import NotAStar, phase_map_table
from analysis.rules import (CHURN_FACTOR, COSINE_HIGH, FEW_TOKENS, REPEAT_HIGH, UNIGRAM_GAP, Rules, diverged_rule,
                            label_summary, phases_summary, scaling_rule, signature_rule, too_short_rule,
                            trajectory_rule, unreachable_classes)
from analysis.stats import CELLS, factorial_effects
from analysis.verdict_tables import decision_table, interventions_table, signature_table, trajectory_table


class BadStep(ValueError):
    """A step asked for on the command line that no point evaluated."""


# ---- the tables ---------------------------------------------------------------------------------------------
def points_table(sweep: Sweep) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = sweep.points
    csv = p[["point", "status", "reached_step", "last_step", "in_grid", "folder", "error"]].copy()
    md = csv.copy()
    md["reached_step"] = [f"{fmt_int(r)}/{fmt_int(last)}" for r, last in zip(p.reached_step, p.last_step)]
    md = md.rename(columns={"reached_step": "step reached/last"}).drop(columns=["last_step"])
    md["in_grid"] = ["yes" if v else "no (not in grid.json)" for v in md.in_grid]
    md = md.drop(columns=["folder"])  # long; in points.csv, and missing points' expected folders are listed above
    md["error"] = [fmt_value(e) if e else "" for e in md.error]
    return md, csv


def results_table(pp: pd.DataFrame, keys: list[str], steps: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    columns = [f"tokens@{s}" for s in steps]
    table = cells(pp, keys + ["switch", "first_switch"], columns)
    # A "Stage 2→" column between the last step before the switch and the first after it; when the cells
    # switch at different places, the column goes last and each value after its switch is bold.
    positions = {sum(s <= f for s in steps) for f in table.first_switch.dropna()}
    md = keys_display(table, keys)
    for step, column in zip(steps, columns):
        shown = []
        for _, row in table.iterrows():
            text = fmt_cell(row, column, "tokens")
            after = not pd.isna(row.first_switch) and step > row.first_switch
            shown.append(f"**{text}**" if after and text != NA else text)
        md[f"step {step_label(step)}"] = shown
    if positions:
        labels = [s.rsplit(" @", 1)[0] if len(positions) == 1 else s for s in table.switch]
        labels = [label or NA for label in labels]
        where = len(keys) + (positions.pop() if len(positions) == 1 else len(steps))
        md.insert(where, "Stage 2→", labels)
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table.drop(columns=["first_switch"])


def transition_table(tr: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if tr.empty:
        return tr, tr
    metrics = ["loss_before", "loss_after", "loss_drop", "loss_pct", "tokens_before", "tokens_after", "recovery",
               "eval_loss_before", "eval_loss_after", "eval_loss_drop", "eval_loss_pct"]
    cell = keys + ["switch", "before_step", "after_step"]
    table = cells(tr, cell, metrics)
    table["phase_before"] = per_cell(tr, cell, "phase_before", phases_summary)
    table["phase_after"] = per_cell(tr, cell, "phase_after", phases_summary)
    md = keys_display(table, keys)
    md["switch"] = table.switch
    md["before → after"] = [f"{step_label(b)} → {step_label(a)}" if not (pd.isna(b) or pd.isna(a)) else NA
                            for b, a in zip(table.before_step, table.after_step)]
    spec = [("loss before", "loss_before", "loss"), ("loss after", "loss_after", "loss"),
            ("drop", "loss_drop", "drop"), ("% change", "loss_pct", "pct"),
            ("tokens before", "tokens_before", "tokens"), ("tokens after", "tokens_after", "tokens"),
            ("recovery factor", "recovery", "factor"), ("eval loss before", "eval_loss_before", "loss"),
            ("eval loss after", "eval_loss_after", "loss"), ("eval drop", "eval_loss_drop", "drop"),
            ("eval % change", "eval_loss_pct", "pct")]
    for header, column, kind in spec:
        if table[column].notna().any():  # e.g. the seeds give no eval loss: leave those columns out
            md[header] = [fmt_cell(row, column, kind) for _, row in table.iterrows()]
    md["phase: what the switch changed"] = [
        "phase unknown (no eval loss)" if b == a == "phase unknown" else f"{b} → {a}" if b != a else f"{b} (unchanged)"
        for b, a in zip(table.phase_before, table.phase_after)]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table


def _judged(label: str) -> bool:
    """Whether some seed of the cell got a ✓/✗ class (else the label is why none did: too short, diverged)."""
    return "✓" in label or "✗" in label or "not collapsed" in label


def size_table(pp: pd.DataFrame, keys: list[str], rules: Rules) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = cells(pp, keys, ["params", "non_embedding", "lowest_stage1", "after_switch", "final_tokens"])
    table["phase_lowest_stage1"] = per_cell(pp, keys, "phase_lowest_stage1", phases_summary)
    for column in ("collapse_s1", "recovery_s2"):  # each seed classed, k/n
        table[column] = per_cell(pp, keys, column, label_summary)
    has_switch = per_cell(pp, keys, "first_switch", lambda s: any(not pd.isna(v) for v in s))
    md = keys_display(table, keys)
    md["params"] = [fmt_value(v, "params") for v in table.params]
    if table.non_embedding.notna().any():
        md["non-embedding"] = [fmt_value(v, "params") for v in table.non_embedding]
    md["lowest before switch"] = [fmt_cell(r, "lowest_stage1", "tokens") for _, r in table.iterrows()]
    md["collapse in S1"] = [NA if pd.isna(r.lowest_stage1) else _judged(r.collapse_s1) and
                            f"{r.collapse_s1} (to {tokens_with_phase(r.lowest_stage1, r.phase_lowest_stage1)})"
                            or r.collapse_s1 for _, r in table.iterrows()]
    md["after switch"] = [fmt_cell(r, "after_switch", "tokens") if s else "no switch"
                          for (_, r), s in zip(table.iterrows(), has_switch)]
    md["recovery in S2"] = [NA if pd.isna(r.after_switch) else _judged(r.recovery_s2) and
                            f"{r.recovery_s2} (to {fmt_cell(r, 'after_switch', 'tokens')})" or r.recovery_s2
                            for _, r in table.iterrows()]
    md["final tokens"] = [fmt_cell(r, "final_tokens", "tokens") for _, r in table.iterrows()]
    md["status"] = table.status
    return md, table


def _not_reached(pp: pd.DataFrame, keys: list[str], step: int, column: str) -> list[str]:
    """Why a cell has no value at `step`: "not reached (running, at 2k)" instead of a bare dash."""
    def why(block: pd.DataFrame) -> str:
        short = block[block[column].isna()]
        if short.empty:
            return ""
        return "not reached (" + ", ".join(f"{r.status}, at {step_label(r.reached_step)}" if not pd.isna(r.reached_step)
                                           else r.status for _, r in short.iterrows()) + ")"
    return [why(block) for _, block in (pp.groupby(keys, dropna=False, sort=False) if keys else [((), pp)])]


def collapse_table(pp: pd.DataFrame, keys: list[str], early: int, late: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = cells(pp, keys, ["tokens_early", "tokens_late", "ratio", "final_tokens", "positions",
                              "distinct_targets"])
    # each seed classed and counted (k/n): a class is never read off the mean of seeds that disagree
    for column in ("ratio_class", "status_late", "status_final"):
        table[column] = per_cell(pp, keys, column, label_summary)
    table["phase_late"] = per_cell(pp, keys, "phase_late", phases_summary)
    table["final_phase"] = per_cell(pp, keys, "final_phase", phases_summary)
    md = keys_display(table, keys)
    for step, column in ((early, "tokens_early"), (late, "tokens_late")):
        md[f"tokens @{step_label(step)}"] = [fmt_cell(r, column, "tokens") if not why else why for (_, r), why
                                             in zip(table.iterrows(), _not_reached(pp, keys, step, column))]
    md["collapse ratio"] = [fmt_cell(r, "ratio", "ratio") for _, r in table.iterrows()]
    md["class"] = table.ratio_class
    md[f"status @{step_label(late)}"] = table.status_late
    md[f"phase @{step_label(late)}"] = table.phase_late
    md["final tokens"] = [fmt_cell(r, "final_tokens", "tokens") for _, r in table.iterrows()]
    md["final status"] = table.status_final
    md["final phase"] = table.final_phase
    md["evaluated positions"] = [
        "unknown: whether the top classes are reachable cannot be checked" if pd.isna(p) else
        f"{p:.0f}" + (f" ({fmt_value(d, 'tokens')} distinct targets)" if not pd.isna(d) else "") +
        (f"; unreachable: {', '.join(unreachable_classes(p))}" if unreachable_classes(p) else "")
        for p, d in zip(table.positions, table.distinct_targets)]
    md["status"] = table.status
    return md, table


def factorial_table(sweep: Sweep, pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LR switch (lr.name == two_stage) x WD switch (wd.name == two_stage), per group of the other keys, on the
    completed points' final unique tokens and final eval loss."""
    points = sweep.points.set_index(["sweep", "point"])
    pp = pp.copy()
    names = points.loc[list(zip(sweep.points.sweep, sweep.points.point))]
    pp["lr_on"] = (names["lr.name"] == "two_stage").to_numpy()
    pp["wd_on"] = (names["wd.name"] == "two_stage").to_numpy()
    pp = pp[pp.status == "completed"]
    if pp.empty or pp.lr_on.nunique() < 2 or pp.wd_on.nunique() < 2:
        return pd.DataFrame(), pd.DataFrame()
    others = [k for k in keys if not (k in ("lr", "wd") or k.startswith(("lr.", "wd.")))]
    rows = []
    for group, block in (pp.groupby(others, dropna=False, sort=False) if others else [((), pp)]):
        group = group if isinstance(group, tuple) else (group,)
        sizes = {cell: int(((block.lr_on == cell[0]) & (block.wd_on == cell[1])).sum()) for cell in CELLS}
        effects = {}
        for outcome in ("final_tokens", "final_eval_loss"):
            values = {cell: block[(block.lr_on == cell[0]) & (block.wd_on == cell[1])][outcome].tolist()
                      for cell in CELLS}
            effects[outcome] = factorial_effects(values)
        if not effects["final_tokens"]:
            continue
        for name in effects["final_tokens"]:
            row = {**dict(zip(others, group)), "effect": name}
            for outcome in ("final_tokens", "final_eval_loss"):
                est, lo, hi, df = effects[outcome].get(name, (float("nan"),) * 3 + (0,))
                row.update({outcome: est, f"{outcome}_lo": lo, f"{outcome}_hi": hi})
            row["seeds per cell"] = "/".join(str(sizes[c]) for c in CELLS)
            row["df"] = df
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table, table
    md = table[others + ["effect"]].copy()
    for k in others:
        md[k] = [fmt_value(v) for v in md[k]]
    md["final unique tokens"] = [fmt_cell(r, "final_tokens", "drop") for _, r in table.iterrows()]
    md["final eval loss"] = [fmt_cell(r, "final_eval_loss", "effect") for _, r in table.iterrows()]
    md["seeds per cell (off/off, LR, WD, both)"] = table["seeds per cell"]
    return md, table


def diagnostics_table(dp: pd.DataFrame, keys: list[str], columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell, at the deepest collapse and at the final evaluation: the step, unique tokens and the present
    diagnostic columns (mean [95% interval] over seeds), and the verdict (`verdict`, per seed)."""
    if not columns:
        return pd.DataFrame(), pd.DataFrame()
    shown = [(c, h, k) for c, h, k in DIAGNOSTICS if c == "unique_tokens" or c in columns]
    numbers = [f"{c}@{at}" for at in ("deepest", "final") for c in ["step"] + [c for c, _, _ in shown]]
    table = cells(dp, keys, numbers + ["unigram_entropy"])
    for at in ("deepest", "final"):
        table[f"verdict@{at}"] = per_cell(dp, keys, f"verdict@{at}", lambda s: verdicts_over_seeds(pd.Series(s, dtype=object)))
        table[f"phase@{at}"] = per_cell(dp, keys, f"phase@{at}", phases_summary)
    md = keys_display(table, keys)
    for at, name in (("deepest", "deepest"), ("final", "final")):
        md[f"{name} step"] = [fmt_cell(r, f"step@{at}", "step") for _, r in table.iterrows()]
        for column, header, kind in shown:
            md[f"{header} @{name}"] = [fmt_cell(r, f"{column}@{at}", kind) for _, r in table.iterrows()]
        md[f"phase @{name}"] = table[f"phase@{at}"]
        md[f"verdict @{name}"] = table[f"verdict@{at}"]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table




# ---- all of them --------------------------------------------------------------------------------------------
TITLES = {
    "points": "Grid points",
    "results": "Results: unique tokens per step",
    "transition": "Transition at each switch",
    "size": "Model size comparison",
    "collapse": "Collapse ratio",
    "trajectory": "Collapse trajectory per cell",
    "interventions": "Interventions: one row per arm",
    "signature": "Collapse signature of the investigation's runs",
    "decision": "Scaling decision",
    "factorial": "LR switch x WD switch (factorial)",
    "diagnostics": "Collapse diagnostics at the deepest collapse and the final evaluation",
    "effects": "Factorial effects on the collapse signature's parts",
    "phase_map": "Phase map: the plateau along each axis",
}
EMPTY = {
    "transition": "no point has an LR or WD switch (lr=two_stage or wd=two_stage)",
    "interventions": "needs a sweep over something other than hidden and seed",
    "decision": "needs a sweep over hidden",
    "factorial": "needs the LR x WD factorial: lr=linear,two_stage wd=constant,two_stage (completed points "
                 "in all four cells)",
    "diagnostics": "no collapse-diagnostic column (loss_gap, hidden_cosine, flip_rate...) in these metrics.csv "
                   "files",
    "effects": "needs a two-level factorial: two or more swept keys besides seed, each with exactly two values",
    "phase_map": "needs numeric keys varied one at a time around a centre",
}


def empty_reason(name: str, params: dict) -> str:
    """Why table `name` has no rows: what this sweep lacks (it quotes the sweep's values, so it is escaped for
    markdown), else the table's standing requirement."""
    return untrusted(params.get("why_empty", {}).get(name) or EMPTY.get(name, "no rows"))


def _optional(build, refusal, *args) -> tuple[tuple[pd.DataFrame, pd.DataFrame], list[str], str]:
    """((markdown, csv), notes, why empty) of a table that refuses some sweeps with a one-line reason."""
    try:
        md, csv, notes = build(*args)
        return (md, csv), notes, ""
    except refusal as err:
        return (pd.DataFrame(), pd.DataFrame()), [], str(err)


def phase_note(rules: Rules) -> str:
    return f"Learning phase: {rules.phase_rule()}."


def _check_steps(name: str, steps, evaluated: list[int]) -> None:
    never = [s for s in steps if s not in evaluated]
    if never:
        shown = ", ".join(map(str, evaluated[:12])) + (", ..." if len(evaluated) > 12 else "")
        raise BadStep(f"{name}: step {', '.join(map(str, never))} was never evaluated by any point "
                      f"(evaluated steps: {shown or 'none'})")


def build_tables(sweep: Sweep, steps: list[int] | None = None, collapse_steps: tuple[int, int] | None = None,
                 rules: Rules = Rules(), pool: bool = False):
    """({name: (markdown frame, csv frame)}, params): params holds the steps, early, late, cell keys, the
    per-point frames, the interventions summary lines and `notes` ({table name: [lines printed above it]}: the
    rules behind its classes).
    Raises BadStep for a requested step that no point evaluated."""
    curves = point_curves(sweep, rules)
    keys, differing = cell_keys(sweep, pool)
    evaluated = evaluated_steps(curves)
    if steps:
        _check_steps("--steps", steps, evaluated)
    steps = sorted(steps) if steps else default_steps(sweep, curves)
    if collapse_steps:
        _check_steps("--collapse-steps", collapse_steps, evaluated)
        (early, late), why = collapse_steps, "as asked (--collapse-steps)"
    else:
        early, late, why = default_collapse_steps(sweep, curves)
    pp = per_point(sweep, curves, steps, early, late, keys, rules)
    tr = per_transition(sweep, curves, keys)
    diagnostics = present_diagnostics(sweep.frame)
    dp = per_point_diagnostics(sweep, curves, keys, diagnostics)
    md, csv, summaries = interventions_table(pp, keys, rules)
    effects, effects_notes, effects_why = _optional(effects_table, NotFactorial, pp, keys)
    phase_map, phase_map_notes, phase_map_why = _optional(phase_map_table, NotAStar, pp, keys)
    tables = {
        "points": points_table(sweep),
        "results": results_table(pp, keys, steps),
        "transition": transition_table(tr, keys),
        "size": size_table(pp, keys, rules),
        "collapse": collapse_table(pp, keys, early, late),
        "trajectory": trajectory_table(pp, keys),
        "interventions": (md, csv),
        "signature": signature_table(pp, keys),
        "decision": decision_table(pp, keys, late, rules),
        "factorial": factorial_table(sweep, pp, keys),
        "diagnostics": diagnostics_table(dp, keys, diagnostics),
        "effects": effects,
        "phase_map": phase_map,
    }
    phase = phase_note(rules)
    notes = {
        "transition": [phase],
        "size": [f"Collapse in S1: at most {rules.collapse_level:g} unique tokens before the switch.", phase],
        "collapse": [f"Collapse ratio = tokens at step {step_label(late)} / tokens at step {step_label(early)} ({why}); "
                     f"classes: <0.2 strong, 0.2-0.5 moderate, 0.5-0.8 minimal collapse, 0.8-1 stable, >1 rising. "
                     f"Status: 1-5 complete, 6-10 severe, 11-30 partial collapse, 31-100 questionable, 101-500 "
                     f"acceptable, 500+ very good; a class needing more distinct predictions than evaluated "
                     f"positions is unreachable.", phase],
        "trajectory": [f"Trajectory: {trajectory_rule(rules)}. Minimum: the fewest unique tokens (first on ties); "
                       f"loss into the minimum: from the first row with a loss to the minimum's row (eval loss when "
                       f"the runs have one, else training loss). Longest plateau: the longest stretch of consecutive "
                       f"evaluations at or below {rules.collapse_level:g} unique tokens, whether or not a switch ends "
                       f"it, with the learning phases on it.", phase],
        "interventions": [f"Summary: {line}" for line in summaries] + [f"Trajectory: {trajectory_rule(rules)}.", phase],
        "signature": [f"Rule: {signature_rule(rules)}. The investigation's runs: about 2 tokens for most of stage 1 "
                      f"while the loss stalls near ln V, then at the WD switch a drop of about 3 nats and about 10 "
                      f"tokens. A healthy run's brief few-token moment (the unigram phase) is not it: its loss keeps "
                      f"falling.", phase],
        "decision": [f"Rule: {scaling_rule(rules)}. The first seed note says diverse = >100 tokens, the second "
                     f"takes 50+ at 768 as the threshold: set it with --diverse. Flags: non-monotonic; smallest "
                     f"size already diverse; fewer than {rules.min_seeds} seeds per size."],
        "factorial": ["Effects on the cell means of completed points, 95% t intervals (pooled within-cell "
                      "variance); interaction = difference of differences."],
        "diagnostics": [f"Deepest collapse = the evaluation with the fewest unique tokens (ties: the earliest). Verdict: "
                        f"unigram phase = |loss gap| < {UNIGRAM_GAP} nats and <= {FEW_TOKENS} tokens; representation "
                        f"collapse = hidden cos > {COSINE_HIGH}; weights churning = flip rate > {CHURN_FACTOR:g}x the "
                        f"point's median; greedy output loops = greedy rep3 >= {REPEAT_HIGH}. Empty cells: not measured "
                        f"at that row.", phase],
        "effects": effects_notes + [f"Release window: {rules.release_window:g} of the run's total steps after "
                                    f"the switch (--release-window)."],
        "phase_map": phase_map_notes + [f"Release window: {rules.release_window:g} of the run's total steps after "
                                        f"the switch (--release-window).", phase],
    }
    if differing:
        notes["points"] = [
            f"Points that differ in {', '.join(differing)} (not only in seed) are "
            + ("POOLED as seeds anyway (--pool)." if pool else "kept in separate cells; --pool averages them as seeds.")]
    notes["points"] = notes.get("points", []) + data_errors(pp)
    for name, (_, csv) in tables.items():
        if any(csv[c].eq(True).any() for c in csv.columns if str(c).endswith("_clipped")):
            notes.setdefault(name, []).append(CLIPPED_NOTE)
    unjudged = [rule for rule, column in ((too_short_rule(), "too_short"), (diverged_rule(), "diverged"))
                if (pp[column] != "").any()]
    if unjudged:  # said under every table that classes points, only when some point is not classed
        for name in ("size", "collapse", "trajectory", "interventions", "signature", "decision", "diagnostics"):
            notes.setdefault(name, []).insert(0, f"Not classed: {'; '.join(unjudged)}.")
    return tables, {"steps": steps, "early": early, "late": late, "why": why, "keys": keys, "differing": differing,
                    "per_point": pp, "interventions_summary": summaries, "diagnostics": diagnostics,
                    "per_point_diagnostics": dp, "notes": notes, "rules": rules, "curves": curves,
                    "why_empty": {"effects": effects_why, "phase_map": phase_map_why}}


if __name__ == "__main__":  # `python -m analysis.tables`: the command lives in analysis/report.py
    from analysis.report import main

    sys.exit(main())
