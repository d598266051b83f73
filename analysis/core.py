"""The analysis of a sweep as one object: `analyse(paths or Sweep, ...)` -> `Analysis`.

It holds everything the outputs show: the points and their curves, the per-point measures and classes (one row
per seed), the cells' keys, the verdicts, every table (analysis/tables.py, analysis/verdict_tables.py) with the
notes that state its rules, and the options it was made with. The tables command (analysis/render.py), the
plots (analysis/plots.py), the report (analysis/document.py) and the notebook only render an Analysis, so that
they cannot disagree and nothing is measured twice.

    from analysis.core import analyse
    a = analyse("multirun/scaling/smoke")        # or a Sweep from analysis.load_sweeps
    a.tables["decision"][0]                      # (markdown frame, csv frame) per table name
    a.notes["decision"]                          # the rules printed above it
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.cells import CLIPPED_NOTE, cells
from analysis.factorial import NotFactorial, effects_table
from analysis.fmt import step_label, untrusted
from analysis.foreign import Labelling
from analysis.load import Sweep, load_sweeps
from analysis.measures import (cell_keys, data_errors, default_collapse_steps, default_steps, evaluated_steps,
                               per_point, per_point_diagnostics, per_transition, point_curves, present_diagnostics)
from analysis.phase_map import NotAStar, phase_map_table
from analysis.rules import (CHURN_FACTOR, COSINE_HIGH, FEW_TOKENS, REPEAT_HIGH, UNIGRAM_GAP, Rules, diverged_rule,
                            scaling_rule, signature_rule, too_short_rule, trajectory_rule)
from analysis.tables import (EMPTY, collapse_table, diagnostics_table, factorial_table, phase_note, points_table,
                             results_table, size_table, transition_table)
from analysis.verdict_tables import (decision_table, interventions_table, signature_table, trajectory_table)

# The key whose values are model sizes: the scaling decision compares them, the collapse-ratio plot puts them on
# its x axis, the interventions summary is given per size (--size-key).
SIZE_KEY = "hidden"


class BadStep(ValueError):
    """A step asked for on the command line that no point evaluated."""


Table = tuple[pd.DataFrame, pd.DataFrame]  # (markdown frame: what is printed, csv frame: the numbers)


@dataclass
class Analysis:
    """One sweep analysed. Frames are the analysis' own: render them, do not change them."""
    sweep: Sweep
    rules: Rules
    size_key: str                    # the size axis (SIZE_KEY unless asked)
    pool: bool                       # points differing in more than the seed averaged anyway (--pool)
    keys: list[str]                  # what tells the cells apart (swept keys but seed, plus `differing`)
    differing: list[str]             # keys beyond the swept ones that differ between would-be seeds
    steps: list[int]                 # the results table's steps
    early: int                       # the collapse ratio's steps
    late: int
    why: str                         # why those two steps
    curves: dict                     # (sweep, point) -> its metric rows indexed by step, with `phase`
    per_point: pd.DataFrame          # one row per point: measures and each seed's classes
    transitions: pd.DataFrame        # one row per point and switch
    diagnostics: list[str]           # the collapse-diagnostic columns present
    per_point_diagnostics: pd.DataFrame
    interventions_summary: list[str]  # one line per size: the arms that end collapsed and those that do not
    tables: dict[str, Table]         # name -> (markdown, csv), in TITLES' order
    notes: dict[str, list[str]]      # name -> the lines printed above the table: the rules of its classes
    why_empty: dict[str, str] = field(default_factory=dict)  # name -> what this sweep lacks for it

    @property
    def points(self) -> pd.DataFrame:
        """Every grid point with its status (missing, running, failed... listed, never dropped)."""
        return self.sweep.points

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell (points that differ only in their seed): its keys' values, `n` (its points) and
        their statuses, in the order the tables list the cells."""
        return cells(self.per_point, self.keys, [])

    @property
    def warnings(self) -> list[str]:
        """What the loader and the measures found wrong in the folders (quoted from them: escape to render)."""
        return list(self.sweep.warnings) + data_errors(self.per_point)

    @property
    def verdicts(self) -> dict[str, pd.DataFrame | list[str]]:
        """The verdicts per cell: collapse signature, scaling decision (csv frames), interventions summary."""
        return {"signature": self.tables["signature"][1], "decision": self.tables["decision"][1],
                "interventions": self.interventions_summary}

    def empty_reason(self, name: str) -> str:
        """Why table `name` has no rows: what this sweep lacks (it quotes the sweep's values, so it is escaped
        for markdown), else the table's standing requirement."""
        return untrusted(self.why_empty.get(name) or EMPTY.get(name, "no rows"))


def _optional(build, refusal, *args) -> tuple[Table, list[str], str]:
    """((markdown, csv), notes, why empty) of a table that refuses some sweeps with a one-line reason."""
    try:
        md, csv, notes = build(*args)
        return (md, csv), notes, ""
    except refusal as err:
        return (pd.DataFrame(), pd.DataFrame()), [], str(err)


def _check_steps(name: str, steps, evaluated: list[int]) -> None:
    never = [s for s in steps if s not in evaluated]
    if never:
        shown = ", ".join(map(str, evaluated[:12])) + (", ..." if len(evaluated) > 12 else "")
        raise BadStep(f"{name}: step {', '.join(map(str, never))} was never evaluated by any point "
                      f"(evaluated steps: {shown or 'none'})")


def analyse(sweep, steps: list[int] | None = None, collapse_steps: tuple[int, int] | None = None,
            rules: Rules = Rules(), pool: bool = False, size_key: str = SIZE_KEY,
            labelling: Labelling | None = None) -> Analysis:
    """The Analysis of `sweep`: a Sweep, or the paths analysis.load_sweeps reads (as one sweep; `labelling`:
    how foreign CSV files are read). Raises NotASweep, BadStep or ValueError (one line) for bad input: a step
    never evaluated, a --size-key that is not one of the cells' keys."""
    if not isinstance(sweep, Sweep):
        sweep = load_sweeps(sweep, labelling=labelling)
    curves = point_curves(sweep, rules)
    keys, differing = cell_keys(sweep, pool)
    if size_key != SIZE_KEY and size_key not in keys:
        raise ValueError(f"--size-key {size_key}: not a key that varies between these points' cells; "
                         f"use one of: {', '.join(keys) or 'none (no key varies)'}")
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
    dp = per_point_diagnostics(sweep, curves, keys, diagnostics, list(zip(pp.too_short, pp.diverged)))
    md, csv, summaries = interventions_table(pp, keys, rules, size_key)
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
        "decision": decision_table(pp, keys, late, rules, size_key),
        "factorial": factorial_table(sweep, pp, keys),
        "diagnostics": diagnostics_table(dp, keys, diagnostics),
        "effects": effects,
        "phase_map": phase_map,
    }
    decision_why = "" if size_key in keys else f"needs a sweep over {size_key}"
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
        "decision": [f"Rule: {scaling_rule(rules, size_key)}. The first seed note says diverse = >100 tokens, the second "
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
    return Analysis(sweep=sweep, rules=rules, size_key=size_key, pool=pool, keys=keys, differing=differing,
                    steps=steps, early=early, late=late, why=why, curves=curves, per_point=pp, transitions=tr,
                    diagnostics=diagnostics, per_point_diagnostics=dp, interventions_summary=summaries,
                    tables=tables, notes=notes, why_empty={"effects": effects_why, "phase_map": phase_map_why,
                                                           "decision": decision_why})
