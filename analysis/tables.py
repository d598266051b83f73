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

With several seeds per cell every number is the mean over seeds with its 95% t interval [lo, hi]; the CSVs
carry the mean, <col>_lo and <col>_hi, and n. `build_tables` also returns the notes printed under each
table: the rule behind every class and verdict in it. The command: `python -m analysis.tables SWEEP_DIR`
(analysis/report.py).
"""

from __future__ import annotations

import sys

import pandas as pd

from analysis.fmt import NA, fmt_cell, fmt_int, fmt_value, step_label
from analysis.load import Sweep
from analysis.measures import (DIAGNOSTICS, cell_keys, data_errors, default_collapse_steps, default_steps,
                               evaluated_steps, per_point, per_point_diagnostics, per_transition, point_curves,
                               present_diagnostics)
from analysis.rules import (CHURN_FACTOR, COSINE_HIGH, FEW_TOKENS, REPEAT_HIGH, UNIGRAM_GAP, Rules, counted,
                            decide_scaling, intervention_summary, label_summary, phases_summary, ratio_class,
                            scaling_rule, signature_rule, token_class, trajectory_rule, unreachable_classes)
from analysis.stats import CELLS, aggregate, factorial_effects


class BadStep(ValueError):
    """A step asked for on the command line that no point evaluated."""


# ---- cells over seeds ---------------------------------------------------------------------------------------
def _statuses(block: pd.Series) -> str:
    counts = block.value_counts()
    if len(block) == 1:
        return str(block.iloc[0])
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _per_cell(frame: pd.DataFrame, keys: list[str], column: str, summary) -> list[str]:
    """`summary` of each cell's values of a text column, cells in first-appearance order."""
    if not keys:
        return [summary(list(frame[column]))]
    return list(frame.groupby(keys, dropna=False, sort=False)[column].agg(lambda s: summary(list(s))))


def _cells(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean [95% interval] per cell, the points' statuses and the number of seeds."""
    table = aggregate(frame, keys, columns)
    table["status"] = _per_cell(frame, keys, "status", lambda s: _statuses(pd.Series(s)))
    return table


def _keys_display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame({k: [fmt_value(v) for v in table[k]] for k in keys}, index=table.index)


def _verdicts(block: pd.Series) -> str:
    """Seeds' verdicts of one cell: the tags as they are for one seed, `tag (k/n seeds)` for several."""
    lists = [v.split("; ") for v in block if v and v != NA]
    if not lists:
        return NA
    if len(lists) == 1:
        return "; ".join(lists[0])
    tags = list(dict.fromkeys(t for tags in lists for t in tags))
    return "; ".join(f"{t} ({sum(t in tags for tags in lists)}/{len(lists)} seeds)" for t in tags)


def _tokens_with_phase(tokens, phase: str) -> str:
    """"2 tokens, near-uniform": a collapse is never shown without the phase it happened in."""
    if pd.isna(tokens):
        return NA
    return f"{fmt_value(tokens, 'tokens')}, {phase}" if phase and phase != NA else fmt_value(tokens, "tokens")


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
    table = _cells(pp, keys + ["switch", "first_switch"], columns)
    # A "Stage 2→" column between the last step before the switch and the first after it; when the cells
    # switch at different places, the column goes last and each value after its switch is bold.
    positions = {sum(s <= f for s in steps) for f in table.first_switch.dropna()}
    md = _keys_display(table, keys)
    for step, column in zip(steps, columns):
        cells = []
        for _, row in table.iterrows():
            text = fmt_cell(row, column, "tokens")
            after = not pd.isna(row.first_switch) and step > row.first_switch
            cells.append(f"**{text}**" if after and text != NA else text)
        md[f"step {step_label(step)}"] = cells
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
    table = _cells(tr, cell, metrics)
    table["phase_before"] = _per_cell(tr, cell, "phase_before", phases_summary)
    table["phase_after"] = _per_cell(tr, cell, "phase_after", phases_summary)
    md = _keys_display(table, keys)
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


def size_table(pp: pd.DataFrame, keys: list[str], rules: Rules) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = _cells(pp, keys, ["params", "non_embedding", "lowest_stage1", "after_switch", "final_tokens"])
    table["phase_lowest_stage1"] = _per_cell(pp, keys, "phase_lowest_stage1", phases_summary)
    has_switch = _per_cell(pp, keys, "first_switch", lambda s: any(not pd.isna(v) for v in s))
    md = _keys_display(table, keys)
    md["params"] = [fmt_value(v, "params") for v in table.params]
    if table.non_embedding.notna().any():
        md["non-embedding"] = [fmt_value(v, "params") for v in table.non_embedding]
    md["lowest before switch"] = [fmt_cell(r, "lowest_stage1", "tokens") for _, r in table.iterrows()]
    md["collapse in S1"] = [NA if pd.isna(r.lowest_stage1) else
                            f"{'✓' if rules.collapsed(r.lowest_stage1) else '✗'} (to "
                            f"{_tokens_with_phase(r.lowest_stage1, r.phase_lowest_stage1)})"
                            for _, r in table.iterrows()]
    md["after switch"] = [fmt_cell(r, "after_switch", "tokens") if s else "no switch"
                          for (_, r), s in zip(table.iterrows(), has_switch)]
    md["recovery in S2"] = [NA if pd.isna(r.after_switch) else
                            f"{'✓' if r.after_switch > r.lowest_stage1 else '✗'} (to {fmt_value(r.after_switch, 'tokens')})"
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
    table = _cells(pp, keys, ["tokens_early", "tokens_late", "ratio", "final_tokens", "positions",
                              "distinct_targets"])
    table["ratio_class"] = [ratio_class(r) for r in table.ratio]
    table["phase_late"] = _per_cell(pp, keys, "phase_late", phases_summary)
    table["final_phase"] = _per_cell(pp, keys, "final_phase", phases_summary)
    table["status_late"] = ["{} ({})".format(*token_class(t)) if not pd.isna(t) else NA for t in table.tokens_late]
    table["status_final"] = ["{} ({})".format(*token_class(t)) if not pd.isna(t) else NA for t in table.final_tokens]
    md = _keys_display(table, keys)
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


def trajectory_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = _cells(pp, keys, ["first_collapse", "min_tokens", "min_step", "recovery_factor", "loss_start",
                              "loss_at_min", "final_tokens"])
    for column in ("trajectory", "loss_kind"):
        table[column] = _per_cell(pp, keys, column, label_summary)
    table["phase_at_min"] = _per_cell(pp, keys, "phase_at_min", phases_summary)
    table["final_phase"] = _per_cell(pp, keys, "final_phase", phases_summary)
    md = _keys_display(table, keys)
    md["first collapse"] = ["never" if pd.isna(r.first_collapse) and not pd.isna(r.min_tokens) else
                            f"step {fmt_cell(r, 'first_collapse', 'step')}" if not pd.isna(r.first_collapse) else NA
                            for _, r in table.iterrows()]
    md["minimum"] = [f"{_tokens_with_phase(r.min_tokens, r.phase_at_min)} @{fmt_cell(r, 'min_step', 'step')}"
                     if not pd.isna(r.min_tokens) else NA for _, r in table.iterrows()]
    md["final / minimum"] = [fmt_cell(r, "recovery_factor", "factor") for _, r in table.iterrows()]
    md["loss into the minimum"] = [f"{fmt_value(r.loss_start, 'loss')} → {fmt_value(r.loss_at_min, 'loss')} "
                                   f"({r.loss_kind})" if not pd.isna(r.loss_start) and not pd.isna(r.loss_at_min)
                                   else NA for _, r in table.iterrows()]
    md["trajectory"] = table.trajectory
    md["final"] = [_tokens_with_phase(r.final_tokens, r.final_phase) for _, r in table.iterrows()]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table


def signature_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell (per arm): the collapse-signature verdict with k/n seeds, and each of its parts."""
    table = _cells(pp, keys, ["signature_plateau_start", "signature_plateau_share"])
    for column in ("signature", "signature_plateau", "signature_stalled", "signature_release"):
        table[column] = _per_cell(pp, keys, column, counted)
    table["signature_release_text"] = _per_cell(pp, keys, "signature_release_text", label_summary)
    md = _keys_display(table, keys)
    md["seed signature"] = table.signature
    md["lasting plateau"] = [f"{p} (from {fmt_cell(r, 'signature_plateau_start', 'step')}, "
                             f"{r.signature_plateau_share:.0%} of stage 1)" if not pd.isna(r.signature_plateau_start)
                             else p for p, (_, r) in zip(table.signature_plateau, table.iterrows())]
    md["loss stalled near uniform"] = table.signature_stalled
    md["release at the switch"] = [f"{p} ({t})" if t and t != NA else p
                                   for p, t in zip(table.signature_release, table.signature_release_text)]
    md["status"] = table.status
    return md, table


def arm_keys(keys: list[str]) -> list[str]:
    """The keys of an intervention sweep's arms: every cell key but the size."""
    return [k for k in keys if k != "hidden"]


def interventions_table(pp: pd.DataFrame, keys: list[str], rules: Rules) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One row per arm (per size, when size is swept too), in the order the sweep declares the arms, and one
    summary line per size naming the arms that end collapsed and those that do not."""
    arms = arm_keys(keys)
    if not arms:
        return pd.DataFrame(), pd.DataFrame(), []
    md, table = trajectory_table(pp, keys)
    md = md.drop(columns=["first collapse", "final / minimum", "loss into the minimum"])
    summaries = []
    for size, block in (pp.groupby("hidden", dropna=False, sort=False) if "hidden" in keys else [(None, pp)]):
        entries = []
        for arm, seeds in block.groupby(arms, dropna=False, sort=False):
            arm = arm if isinstance(arm, tuple) else (arm,)
            waiting = [s for s in seeds.status if s in ("failed", "running", "missing", "no_record")]
            entries.append({"arm": ", ".join(fmt_value(v) for v in arm), "final_tokens": list(seeds.final_tokens),
                            "waiting": waiting})
        prefix = f"hidden={fmt_value(size)}: " if size is not None else ""
        summaries.append(prefix + intervention_summary(entries, rules))
    return md, table, summaries


def _phase_by_hidden(sizes: list[dict]) -> str:
    phases = {s["phase"] for s in sizes}
    if len(phases) == 1:
        return phases.pop()
    return "; ".join(f"{fmt_value(s['hidden'])}: {s['phase']}" for s in sizes)


def decision_table(pp: pd.DataFrame, keys: list[str], late: int, rules: Rules) -> tuple[pd.DataFrame, pd.DataFrame]:
    if "hidden" not in keys:
        return pd.DataFrame(), pd.DataFrame()
    others = [k for k in keys if k != "hidden"]
    rows = []
    for group, block in (pp.groupby(others, dropna=False, sort=False) if others else [((), pp)]):
        group = group if isinstance(group, tuple) else (group,)
        sizes = []
        for hidden, seeds in block.sort_values("hidden", kind="stable").groupby("hidden", sort=False):
            have = seeds.tokens_late.notna()
            sizes.append({"hidden": hidden, "tokens": seeds.tokens_late[have].mean() if have.any() else float("nan"),
                          "seeds": int(have.sum()), "phase": phases_summary(list(seeds.phase_late[have])),
                          "waiting": [s for s in dict.fromkeys(seeds.status[~have])]})
        decision = decide_scaling(sizes, rules)
        rows.append({**dict(zip(others, group)), "step": late,
                     "tokens by hidden": "; ".join(f"{fmt_value(s['hidden'])}: {fmt_value(s['tokens'], 'tokens')}"
                                                   for s in sizes if s["seeds"]),
                     "phase by hidden": _phase_by_hidden([s for s in sizes if s["seeds"]]),
                     f"diverse (>{rules.diverse:g})": ", ".join(fmt_value(s["hidden"]) for s in sizes
                                                             if s["seeds"] and s["tokens"] > rules.diverse) or "none",
                     "seeds per size": "/".join(str(s["seeds"]) for s in sizes),
                     **decision})
    table = pd.DataFrame(rows)
    md = table.copy()
    for k in others:
        md[k] = [fmt_value(v) for v in md[k]]
    md["step"] = [step_label(s) for s in md.step]
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
    table = _cells(dp, keys, numbers + ["unigram_entropy"])
    for at in ("deepest", "final"):
        table[f"verdict@{at}"] = _per_cell(dp, keys, f"verdict@{at}", lambda s: _verdicts(pd.Series(s, dtype=object)))
        table[f"phase@{at}"] = _per_cell(dp, keys, f"phase@{at}", phases_summary)
    md = _keys_display(table, keys)
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
}
EMPTY = {
    "transition": "no point has an LR or WD switch (lr=two_stage or wd=two_stage)",
    "interventions": "needs a sweep over something other than hidden and seed",
    "decision": "needs a sweep over hidden",
    "factorial": "needs the LR x WD factorial: lr=linear,two_stage wd=constant,two_stage (completed points "
                 "in all four cells)",
    "diagnostics": "no collapse-diagnostic column (loss_gap, hidden_cosine, flip_rate...) in these metrics.csv "
                   "files",
}


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
    per-point frames and `notes` ({table name: [lines printed above it]}: the rules behind its classes).
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
                       f"the runs have one, else training loss).", phase],
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
    }
    if differing:
        notes["points"] = [
            f"Points that differ in {', '.join(differing)} (not only in seed) are "
            + ("POOLED as seeds anyway (--pool)." if pool else "kept in separate cells; --pool averages them as seeds.")]
    notes["points"] = notes.get("points", []) + data_errors(pp)
    return tables, {"steps": steps, "early": early, "late": late, "why": why, "keys": keys, "differing": differing,
                    "per_point": pp, "diagnostics": diagnostics, "per_point_diagnostics": dp, "notes": notes,
                    "rules": rules, "curves": curves}


if __name__ == "__main__":  # `python -m analysis.tables`: the command lives in analysis/report.py
    from analysis.report import main

    sys.exit(main())
