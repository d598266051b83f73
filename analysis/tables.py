"""The tables: per-point measures (analysis.measures) aggregated over seeds into markdown and CSV frames.

  points        every grid point with its status (missing, running, failed... are listed, never dropped)
  results       unique tokens at chosen steps, the LR/WD switch marked (values after it bold)
  transition    loss, tokens and learning phase at the last evaluation before / first after each switch
  size          parameters, lowest tokens before the switch (and its phase), tokens after it, final tokens
  collapse      tokens(LATE) / tokens(EARLY) with its class, the token-count status class and the phase
  trajectory    per cell: first collapse, minimum, recovery factor, loss during the collapse, trajectory class
  interventions one row per arm of a sweep over anything but size: trajectory, minimum, final tokens and phase
  signature     per cell: the investigation's collapse signature (yes / partial / no, k/n seeds) and its parts
  decision      over sizes (--size-key, default hidden): A scaling fixes it, B no threshold, C mixed, or
                undecided (what it waits for)
  factorial     LR switch x WD switch: main effects and interaction on final tokens and eval loss
  diagnostics   the collapse diagnostics at each point's deepest collapse and final evaluation, with a verdict
  effects       two-level factorial (each swept key two values): main effects and two-way interactions on the
                signature's parts and the final loss and tokens (analysis/factorial.py)
  phase_map     one numeric key varied at a time around a centre: the plateau's phase, length and release per
                axis value (analysis/phase_map.py)

With several seeds per cell every number is the mean over seeds with its 95% t interval [lo, hi]; the CSVs
carry the mean, <col>_lo and <col>_hi, and n. analysis.core.analyse builds them all, with the notes printed
above each table: the rule behind every class and verdict in it. The command: `python -m analysis tables
SWEEP_DIR` (analysis/render.py).
"""

from __future__ import annotations

import sys

import pandas as pd

from analysis.cells import cells, keys_display, per_cell, tokens_with_phase, verdicts_over_seeds
from analysis.fmt import NA, fmt_cell, fmt_int, fmt_value, step_label
from analysis.load import Sweep
from analysis.measures import DIAGNOSTICS
from analysis.rules import Rules, label_summary, phases_summary, unreachable_classes
from analysis.stats import CELLS, factorial_effects


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


def phase_note(rules: Rules) -> str:
    return f"Learning phase: {rules.phase_rule()}."


if __name__ == "__main__":  # `python -m analysis.tables`: an alias of `python -m analysis tables`
    from analysis.cli import run

    sys.exit(run("tables"))
