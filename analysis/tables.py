"""The seeds' tables from sweep folders: `python -m analysis.tables SWEEP_DIR [SWEEP_DIR...]`.

Prints every table as markdown and writes each as <name>.md and <name>.csv (plus tables.md, all of them, and
the PNG plots) into --out (default SWEEP_DIR/analysis):

  points       every grid point with its status (missing, running, failed... are listed, never dropped)
  results      unique tokens at chosen steps, the LR/WD switch marked as seed 001 does (values after it bold)
  transition   loss and tokens at the last evaluation before / first after each switch: drop, %, recovery
  size         parameters, lowest tokens before the switch, tokens after it, final tokens (seed 001)
  collapse     tokens(LATE) / tokens(EARLY) with seed 002's classes, and the token-count status class
  decision     seed 000/002's decision tree over hidden sizes: A scaling fixes it, B no threshold, C mixed
  factorial    LR switch x WD switch: main effects and interaction on final tokens and eval loss
  diagnostics  issue 6's collapse diagnostics at each point's deepest collapse and final evaluation, with a
               verdict (rules in `verdict`); left out for sweeps whose metrics.csv has none of those columns

With several seeds per cell every number is the mean over seeds with its 95% t interval [lo, hi]; the CSVs
carry the mean, <col>_lo and <col>_hi, and n.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from analysis.load import CONFIG_COLUMNS, NotASweep, Sweep, load_sweeps
from analysis.stats import CELLS, aggregate, factorial_effects
from bitnet.records import FINISHED_STATUSES

# Seed 002, "Calculate Collapse Ratio": tokens(4k) / tokens(1k).
RATIO_CLASSES = [(0.2, "strong collapse"), (0.5, "moderate collapse"), (0.8, "minimal collapse"),
                 (math.inf, "stable")]
# Seed 002, "What Different Token Counts Mean": upper bound (inclusive), interpretation, status.
TOKEN_CLASSES = [(5, "complete collapse", "❌ Failed"), (10, "severe collapse", "❌ Failed"),
                 (30, "partial collapse", "⚠️ Marginal"), (100, "questionable", "⚠️ Marginal"),
                 (500, "acceptable", "✅ Working"), (math.inf, "very good", "✅ Working")]
DIVERSE = 100  # seed 000's decision tree: "Does any model stay diverse (>100 tokens)?"
# Seed 001 marks "collapse in S1" for the points that fell to a Failed class (<= 10 tokens) before the switch.
COLLAPSED = 10
NA = "–"

# Issue 6's collapse diagnostics (bitnet/diagnostics.py) that the diagnostics table shows at each point's deepest
# collapse and final evaluation: (metrics.csv column, header, number format). unique_tokens is always shown; the
# others only when some point of the sweep has a value for them.
DIAGNOSTICS = [("unique_tokens", "tokens", "tokens"), ("loss_gap", "loss gap", "drop"),
               ("hidden_cosine", "hidden cos", "cos"), ("effective_tokens", "eff. tokens", "eff"),
               ("flip_rate", "flip rate", "rate"), ("zero_frac", "zero frac", "cos"),
               ("greedy_repeat3", "greedy rep3", "ratio")]
# The verdict's thresholds (see `verdict`).
UNIGRAM_GAP = 0.1     # nats: |eval loss - unigram entropy| below this is "at the unigram loss"
FEW_TOKENS = 30       # seed 002's collapse classes (complete, severe, partial collapse) end at 30 tokens
COSINE_HIGH = 0.9     # mean cosine of final hidden states across positions
CHURN_FACTOR = 2.0    # flip rate above this many times the point's own median flip rate
REPEAT_HIGH = 0.5     # share of greedy trigrams already seen earlier in the same continuation


# ---- classes ------------------------------------------------------------------------------------------------
def ratio_class(ratio: float) -> str:
    if pd.isna(ratio):
        return NA
    # The seeds' bands: [0, 0.2) strong, [0.2, 0.5) moderate, [0.5, 0.8] minimal (0.80 -> minimal), > 0.8 stable.
    for bound, name in RATIO_CLASSES:
        if ratio < bound or (bound == 0.8 and ratio == 0.8):
            return name
    return RATIO_CLASSES[-1][1]


def token_class(tokens: float) -> tuple[str, str]:
    """(interpretation, status) of a unique-token count; a mean over seeds is rounded first."""
    if pd.isna(tokens):
        return NA, NA
    tokens = round(tokens)
    for bound, name, status in TOKEN_CLASSES:
        if tokens <= bound:
            return name, status
    return TOKEN_CLASSES[-1][1:]


# ---- formatting ---------------------------------------------------------------------------------------------
def step_label(step: int) -> str:
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


FORMATS = {"loss": "{:.2f}", "effect": "{:+.3f}", "cos": "{:.3f}", "eff": "{:.1f}", "rate": "{:.3g}",
           "pct": "{:.1f}%", "factor": "{:.1f}x", "ratio": "{:.2f}"}


def fmt_value(value, kind: str = "g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if kind in FORMATS:
        return FORMATS[kind].format(value)
    if kind == "tokens":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if kind == "drop":  # a sign only when it is a rise: "-3.02", "+0.40", "0.00"
        return f"{value:+.2f}" if value > 0 else f"{value:.2f}"
    if kind == "params":
        for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
            if abs(value) >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.0f}"
    return str(value)  # floats as Python writes them: 0.0015, 0.0 (the seeds write "WD 0.1→0.0")


def fmt_cell(row, column: str, kind: str) -> str:
    """`mean` alone for one seed, `mean [lo, hi]` for several."""
    text = fmt_value(row[column], kind)
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    if text != NA and lo is not None and not pd.isna(lo):
        text += f" [{fmt_value(lo, kind)}, {fmt_value(hi, kind)}]"
    return text


def _int(value) -> str:
    return NA if value is None or pd.isna(value) else str(int(value))


def to_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True) if len(frame) else "(no rows)"


# ---- per-point numbers --------------------------------------------------------------------------------------
def cell_keys(sweep: Sweep) -> list[str]:
    """What tells the cells of the tables apart: the swept keys except the seed, plus any resolved config
    value that varies across the loaded points without being set by the swept keys (e.g. two sweeps of the
    same grid with different fixed LRs)."""
    keys = [k for k in sweep.swept if k != "seed"]
    points = sweep.points
    for column in CONFIG_COLUMNS:
        if column in keys or column == "seed" or points[column].astype(str).nunique() < 2:
            continue
        if keys and (points.groupby(keys, dropna=False)[column].agg(lambda s: s.astype(str).nunique()) <= 1).all():
            continue
        keys.append(column)
    return keys


def switch_events(point: pd.Series) -> list[tuple[int, str]]:
    """[(step, label)] of the point's switches; LR and WD at the same step make one event."""
    parts = {}
    if not pd.isna(point.get("lr_switch")):
        peak, stage2 = point.get("lr.peak"), point.get("lr.stage2_peak")
        label = f"LR {fmt_value(peak)}→{fmt_value(stage2)}" if not pd.isna(stage2) else "LR switch"
        parts.setdefault(int(point["lr_switch"]), []).append(label)
    if not pd.isna(point.get("wd_switch")):
        value, stage2 = point.get("wd.value"), point.get("wd.stage2_value")
        label = f"WD {fmt_value(value)}→{fmt_value(stage2)}" if not pd.isna(value) and not pd.isna(stage2) \
            else "WD switch"
        parts.setdefault(int(point["wd_switch"]), []).append(label)
    return [(step, " + ".join(labels)) for step, labels in sorted(parts.items())]


def point_curves(sweep: Sweep) -> dict:
    """(sweep, point) -> that point's metric rows indexed by step (empty for missing points)."""
    curves = {}
    for key, block in sweep.frame.groupby(["sweep", "point"], sort=False):
        curves[key] = block.dropna(subset=["step"]).astype({"step": int}).set_index("step")
    return curves


def nearest_step(steps, target: float):
    steps = [s for s in steps if s > 0] or list(steps)
    return min(steps, key=lambda s: (abs(s - target), s)) if steps else None


def _at(curve: pd.DataFrame, step, column: str):
    if step is None or step not in curve.index:
        return float("nan")
    return curve.at[step, column]


def default_steps(sweep: Sweep, curves: dict, count: int = 6) -> list[int]:
    """A handful of evenly spaced evaluated steps (not step 0), the last one, and the evaluations either side
    of the most common switch so that the switch column falls between two shown steps."""
    evaluated = sorted({s for c in curves.values() for s in c.index if s > 0})
    if len(evaluated) <= count + 2:
        return evaluated
    last = evaluated[-1]
    targets = [last * (i + 1) / count for i in range(count)]
    chosen = {nearest_step(evaluated, t) for t in targets}
    switches = [s for _, p in sweep.points.iterrows() for s, _ in switch_events(p)[:1]]
    if switches:
        switch = max(set(switches), key=switches.count)
        chosen |= {max([s for s in evaluated if s <= switch], default=evaluated[0]),
                   min([s for s in evaluated if s > switch], default=last)}
    return sorted(chosen)


def per_point(sweep: Sweep, curves: dict, steps: list[int], early: int, late: int, keys: list[str]) -> pd.DataFrame:
    rows = []
    for _, point in sweep.points.iterrows():
        curve = curves[(point["sweep"], point["point"])]
        events = switch_events(point)
        first_switch = events[0][0] if events else None
        row = {**{k: point[k] for k in keys}, "seed": point.get("seed"), "point": point["point"],
               "status": point["status"], "switch": "; ".join(f"{label} @{step_label(s)}" for s, label in events),
               "first_switch": first_switch, "params": point["params_total"],
               "non_embedding": point["params_non_embedding"], "positions": point["eval_positions"],
               "distinct_targets": point["eval_unique_targets"]}
        for step in steps:
            row[f"tokens@{step}"] = _at(curve, step, "unique_tokens")
        tokens = curve["unique_tokens"].dropna() if "unique_tokens" in curve else pd.Series(dtype=float)
        stage1 = tokens[tokens.index <= first_switch] if first_switch is not None else tokens
        after_steps = [s for s in tokens.index if first_switch is not None and s > first_switch]
        row["lowest_stage1"] = stage1.min() if len(stage1) else float("nan")
        row["after_switch"] = tokens[after_steps[0]] if after_steps else float("nan")
        finished = point["status"] in FINISHED_STATUSES and len(tokens)
        row["final_step"] = tokens.index[-1] if len(tokens) else float("nan")
        row["final_tokens"] = tokens.iloc[-1] if finished else float("nan")
        row["final_eval_loss"] = curve["eval_loss"].dropna().iloc[-1] \
            if finished and curve["eval_loss"].notna().any() else float("nan")
        row["tokens_early"], row["tokens_late"] = _at(curve, early, "unique_tokens"), _at(curve, late, "unique_tokens")
        row["ratio"] = row["tokens_late"] / row["tokens_early"] if row["tokens_early"] else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def per_transition(sweep: Sweep, curves: dict, keys: list[str]) -> pd.DataFrame:
    """One row per (point, switch): the last evaluation at or before the switch step S (the row at S is still
    stage 1, bitnet/schedules.py) and the first one after it."""
    rows = []
    for _, point in sweep.points.iterrows():
        curve = curves[(point["sweep"], point["point"])]
        for step, label in switch_events(point):
            before = max([s for s in curve.index if s <= step], default=None)
            after = min([s for s in curve.index if s > step], default=None)
            row = {**{k: point[k] for k in keys}, "switch": f"{label} @{step_label(step)}", "switch_step": step,
                   "status": point["status"], "before_step": before, "after_step": after}
            for column, name in (("loss", "loss"), ("eval_loss", "eval_loss"), ("unique_tokens", "tokens")):
                b, a = _at(curve, before, column), _at(curve, after, column)
                row[f"{name}_before"], row[f"{name}_after"] = b, a
                if name != "tokens":
                    row[f"{name}_drop"] = a - b
                    row[f"{name}_pct"] = (a - b) / b * 100 if b else float("nan")
            row["recovery"] = row["tokens_after"] / row["tokens_before"] if row["tokens_before"] else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def present_diagnostics(frame: pd.DataFrame) -> list[str]:
    """The issue-6 diagnostic columns that hold a value somewhere in the sweep (none for older runs)."""
    return [c for c, _, _ in DIAGNOSTICS[1:] if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def _ok(value) -> bool:
    return value is not None and not pd.isna(value)


def verdict(values: dict, flip_median: float | None = None) -> list[str]:
    """What one evaluation row's diagnostics say, as short tags; a rule whose inputs are empty is skipped.

      unigram phase            |loss_gap| < UNIGRAM_GAP (0.1 nats) and unique tokens <= FEW_TOKENS (30): the eval
                               loss is the unigram entropy, the loss of predicting token frequencies and no more
      representation collapse  hidden_cosine > COSINE_HIGH (0.9): the final hidden states of different positions
                               point the same way
      weights churning         flip_rate > CHURN_FACTOR (2) x flip_median, the point's median flip rate over its
                               evaluations (needs 3 or more evaluations with a flip rate to ever fire)
      greedy output loops      greedy_repeat3 >= REPEAT_HIGH (0.5): half the greedy trigrams are repeats

    With none of them: "few tokens, no diagnostic signal" at <= 30 unique tokens (the diagnostics do not explain
    this collapse), else "no collapse signal"; no unique-token count at all gives []. The tags say what the
    numbers show at that row, not why."""
    tokens = values.get("unique_tokens")
    if not _ok(tokens):
        return []
    tags = []
    gap, cosine = values.get("loss_gap"), values.get("hidden_cosine")
    flip, repeat = values.get("flip_rate"), values.get("greedy_repeat3")
    if _ok(gap) and abs(gap) < UNIGRAM_GAP and tokens <= FEW_TOKENS:
        tags.append("unigram phase")
    if _ok(cosine) and cosine > COSINE_HIGH:
        tags.append("representation collapse")
    if _ok(flip) and _ok(flip_median) and flip > CHURN_FACTOR * flip_median:
        tags.append("weights churning")
    if _ok(repeat) and repeat >= REPEAT_HIGH:
        tags.append("greedy output loops")
    if not tags:
        tags.append("few tokens, no diagnostic signal" if tokens <= FEW_TOKENS else "no collapse signal")
    return tags


def per_point_diagnostics(sweep: Sweep, curves: dict, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per point: the diagnostic `columns` (and unique tokens) at its deepest collapse (the evaluation
    with the fewest unique tokens, ties -> the earliest) and at its final evaluation (finished points only, as in
    the other tables), with the verdict tags of each."""
    columns = ["unique_tokens"] + [c for c in columns if c != "unique_tokens"]
    rows = []
    for _, point in sweep.points.iterrows():
        curve = curves[(point["sweep"], point["point"])]
        evaluated = curve[curve["unique_tokens"].notna()] if "unique_tokens" in curve else curve.iloc[:0]
        flips = pd.to_numeric(curve["flip_rate"], errors="coerce").dropna() if "flip_rate" in curve else []
        median = float(flips.median()) if len(flips) else float("nan")
        row = {**{k: point[k] for k in keys}, "seed": point.get("seed"), "point": point["point"],
               "status": point["status"], "unigram_entropy": point.get("unigram_entropy"), "flip_median": median}
        finished = point["status"] in FINISHED_STATUSES and len(evaluated)
        steps = {"deepest": evaluated["unique_tokens"].idxmin() if len(evaluated) else None,  # first minimum
                 "final": evaluated.index[-1] if finished else None}
        for at, step in steps.items():
            row[f"step@{at}"] = step if step is not None else float("nan")
            values = {c: _at(curve, step, c) if c in curve else float("nan") for c in columns}
            for column, value in values.items():
                row[f"{column}@{at}"] = pd.to_numeric(value, errors="coerce")
            row[f"verdict@{at}"] = "; ".join(verdict(values, median)) or NA
        rows.append(row)
    return pd.DataFrame(rows)


def _verdicts(block: pd.Series) -> str:
    """Seeds' verdicts of one cell: the tags as they are for one seed, `tag (k/n seeds)` for several."""
    lists = [v.split("; ") for v in block if v and v != NA]
    if not lists:
        return NA
    if len(lists) == 1:
        return "; ".join(lists[0])
    tags = list(dict.fromkeys(t for tags in lists for t in tags))
    return "; ".join(f"{t} ({sum(t in tags for tags in lists)}/{len(lists)} seeds)" for t in tags)


def _statuses(block: pd.Series) -> str:
    counts = block.value_counts()
    if len(block) == 1:
        return str(block.iloc[0])
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _cells(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean [95% interval] per cell, the points' statuses and the number of seeds."""
    table = aggregate(frame, keys, columns)
    status = frame.groupby(keys, dropna=False, sort=False)["status"].agg(_statuses) if keys else \
        pd.Series([_statuses(frame["status"])])
    table["status"] = status.to_numpy()
    return table


def _keys_display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame({k: [fmt_value(v) for v in table[k]] for k in keys}, index=table.index)


# ---- the tables ---------------------------------------------------------------------------------------------
def points_table(sweep: Sweep) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = sweep.points
    csv = p[["point", "status", "reached_step", "last_step", "in_grid", "folder", "error"]].copy()
    md = csv.copy()
    md["reached_step"] = [f"{_int(r)}/{_int(l)}" for r, l in zip(p.reached_step, p.last_step)]
    md = md.rename(columns={"reached_step": "step reached/last"}).drop(columns=["last_step"])
    md["in_grid"] = ["yes" if v else "no (not in multirun.yaml)" for v in md.in_grid]
    md = md.drop(columns=["folder"])  # long; in points.csv, and missing points' expected folders are listed above
    md["error"] = [fmt_value(e) if e else "" for e in md.error]
    return md, csv


def results_table(pp: pd.DataFrame, keys: list[str], steps: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    columns = [f"tokens@{s}" for s in steps]
    table = _cells(pp, keys + ["switch", "first_switch"], columns)
    # Seed 001 puts a "Stage 2→" column between the last step before the switch and the first after it; when
    # the cells switch at different places, the column goes last and each value after its switch is bold.
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
    csv = table.drop(columns=["first_switch"])
    return md, csv


def transition_table(tr: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if tr.empty:
        return tr, tr
    metrics = ["loss_before", "loss_after", "loss_drop", "loss_pct", "tokens_before", "tokens_after", "recovery",
               "eval_loss_before", "eval_loss_after", "eval_loss_drop", "eval_loss_pct"]
    table = _cells(tr, keys + ["switch", "before_step", "after_step"], metrics)
    md = _keys_display(table, keys)
    md["switch"] = table.switch
    md["before → after"] = [f"{step_label(int(b))} → {step_label(int(a))}" if not (pd.isna(b) or pd.isna(a))
                            else NA for b, a in zip(table.before_step, table.after_step)]
    spec = [("loss before", "loss_before", "loss"), ("loss after", "loss_after", "loss"),
            ("drop", "loss_drop", "drop"), ("% change", "loss_pct", "pct"),
            ("tokens before", "tokens_before", "tokens"), ("tokens after", "tokens_after", "tokens"),
            ("recovery factor", "recovery", "factor"), ("eval loss before", "eval_loss_before", "loss"),
            ("eval loss after", "eval_loss_after", "loss"), ("eval drop", "eval_loss_drop", "drop"),
            ("eval % change", "eval_loss_pct", "pct")]
    for header, column, kind in spec:
        if table[column].notna().any():  # e.g. the seeds give no eval loss: leave those columns out
            md[header] = [fmt_cell(row, column, kind) for _, row in table.iterrows()]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table


def size_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = _cells(pp, keys, ["params", "non_embedding", "lowest_stage1", "after_switch", "final_tokens"])
    has_switch = pp.groupby(keys, dropna=False, sort=False)["first_switch"].agg(lambda s: s.notna().any()) \
        if keys else pd.Series([pp.first_switch.notna().any()])
    md = _keys_display(table, keys)
    md["params"] = [fmt_value(v, "params") for v in table.params]
    if table.non_embedding.notna().any():
        md["non-embedding"] = [fmt_value(v, "params") for v in table.non_embedding]
    md["lowest before switch"] = [fmt_cell(r, "lowest_stage1", "tokens") for _, r in table.iterrows()]
    md["collapse in S1"] = [NA if pd.isna(r.lowest_stage1) else
                            f"{'✓' if round(r.lowest_stage1) <= COLLAPSED else '✗'} (to {fmt_value(r.lowest_stage1, 'tokens')})"
                            for _, r in table.iterrows()]
    md["after switch"] = [fmt_cell(r, "after_switch", "tokens") if s else "no switch"
                          for (_, r), s in zip(table.iterrows(), has_switch)]
    md["recovery in S2"] = [NA if pd.isna(r.after_switch) else
                            f"{'✓' if r.after_switch > r.lowest_stage1 else '✗'} (to {fmt_value(r.after_switch, 'tokens')})"
                            for _, r in table.iterrows()]
    md["final tokens"] = [fmt_cell(r, "final_tokens", "tokens") for _, r in table.iterrows()]
    md["status"] = table.status
    return md, table


def collapse_table(pp: pd.DataFrame, keys: list[str], early: int, late: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = _cells(pp, keys, ["tokens_early", "tokens_late", "ratio", "final_tokens", "positions",
                              "distinct_targets"])
    table["ratio_class"] = [ratio_class(r) for r in table.ratio]
    table["status_late"] = ["{} ({})".format(*token_class(t)) if not pd.isna(t) else NA for t in table.tokens_late]
    table["status_final"] = ["{} ({})".format(*token_class(t)) if not pd.isna(t) else NA for t in table.final_tokens]
    md = _keys_display(table, keys)
    md[f"tokens @{step_label(early)}"] = [fmt_cell(r, "tokens_early", "tokens") for _, r in table.iterrows()]
    md[f"tokens @{step_label(late)}"] = [fmt_cell(r, "tokens_late", "tokens") for _, r in table.iterrows()]
    md["collapse ratio"] = [fmt_cell(r, "ratio", "ratio") for _, r in table.iterrows()]
    md["class"] = table.ratio_class
    md[f"status @{step_label(late)}"] = table.status_late
    md["final tokens"] = [fmt_cell(r, "final_tokens", "tokens") for _, r in table.iterrows()]
    md["final status"] = table.status_final
    # The classes were written for 4096+ positions; with fewer, the top classes are out of reach.
    md["evaluated positions"] = [NA if pd.isna(p) else f"{p:.0f} ({fmt_value(d, 'tokens')} distinct targets)"
                                 if not pd.isna(d) else f"{p:.0f}" for p, d in zip(table.positions, table.distinct_targets)]
    md.loc[md["evaluated positions"] == NA, "evaluated positions"] = "unknown"
    md["status"] = table.status
    return md, table


def decide(tokens_by_hidden: list[tuple[float, float]]) -> tuple[str, str]:
    """Seed 000's decision tree ("Does any model stay diverse (>100 tokens)?") with seed 002's patterns.
    tokens_by_hidden: [(hidden, tokens at the decision step)] sorted by hidden.
      C  non-monotonic: a larger size falls into a worse status group (Failed < Marginal < Working) than a
         smaller one (seed 000: "256 (2) -> 512 (100) -> 768 (10) -> 1024 (200)"), or tokens improve with size
         without any size reaching >100 (seed 002's gradual pattern);
      A  some size stays diverse and so does every larger one: scaling fixes it, threshold = smallest such;
      B  no size stays diverse and the largest is in no better status group than the smallest: no threshold."""
    rank = {status: i for i, status in enumerate(dict.fromkeys(s for _, _, s in TOKEN_CLASSES))}
    groups = [rank[token_class(t)[1]] for _, t in tokens_by_hidden]
    if any(later < earlier for i, earlier in enumerate(groups) for later in groups[i + 1:]):
        return "C", "mixed: non-monotonic in size (a larger model is worse than a smaller one); investigate"
    diverse = [h for h, t in tokens_by_hidden if t > DIVERSE]
    if diverse:
        threshold = diverse[0]
        if all(t > DIVERSE for h, t in tokens_by_hidden if h >= threshold):
            return "A", (f"scaling fixes it: hidden ≥ {fmt_value(threshold)} stays diverse (>{DIVERSE} tokens); "
                         f"use hidden ≥ {fmt_value(threshold)}")
        return "C", "mixed: non-monotonic in size (a smaller model is diverse, a larger one is not); investigate"
    if groups[-1] > groups[0]:
        return "C", (f"mixed: tokens improve with size but none stays above {DIVERSE}; "
                     f"combine larger models with a reduced LR")
    return "B", f"no threshold: no size stays above {DIVERSE} tokens; scaling alone does not fix it, adjust the LR"


def decision_table(pp: pd.DataFrame, keys: list[str], late: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    if "hidden" not in keys:
        return pd.DataFrame(), pd.DataFrame()
    others = [k for k in keys if k != "hidden"]
    cells = aggregate(pp, keys, ["tokens_late"])
    rows = []
    for group, block in (cells.groupby(others, dropna=False, sort=False) if others else [((), cells)]):
        group = group if isinstance(group, tuple) else (group,)
        block = block.dropna(subset=["hidden", "tokens_late"]).sort_values("hidden")
        pairs = list(zip(block.hidden, block.tokens_late))
        if len(pairs) < 2:
            outcome, meaning = NA, "needs two or more hidden sizes with tokens at this step"
        else:
            outcome, meaning = decide(pairs)
        rows.append({**dict(zip(others, group)), "step": late,
                     "tokens by hidden": ", ".join(f"{fmt_value(h)}: {fmt_value(t, 'tokens')}" for h, t in pairs),
                     "diverse (>100)": ", ".join(fmt_value(h) for h, t in pairs if t > DIVERSE) or "none",
                     "outcome": outcome, "meaning": meaning})
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
        table[f"verdict@{at}"] = (dp.groupby(keys, dropna=False, sort=False)[f"verdict@{at}"].agg(_verdicts)
                                  if keys else pd.Series([_verdicts(dp[f"verdict@{at}"])])).to_numpy()
    md = _keys_display(table, keys)
    for at, name in (("deepest", "deepest"), ("final", "final")):
        md[f"{name} step"] = [fmt_cell(r, f"step@{at}", "tokens") for _, r in table.iterrows()]
        for column, header, kind in shown:
            md[f"{header} @{name}"] = [fmt_cell(r, f"{column}@{at}", kind) for _, r in table.iterrows()]
        md[f"verdict @{name}"] = table[f"verdict@{at}"]
    md["status"] = table.status
    if (table.n > 1).any():
        md["seeds"] = table.n
    return md, table


# ---- the command --------------------------------------------------------------------------------------------
TITLES = {
    "points": "Grid points",
    "results": "Results: unique tokens per step",
    "transition": "Transition at each switch",
    "size": "Model size comparison",
    "collapse": "Collapse ratio",
    "decision": "Decision tree (seeds 000/002)",
    "factorial": "LR switch x WD switch (factorial)",
    "diagnostics": "Collapse diagnostics at the deepest collapse and the final evaluation",
}
EMPTY = {
    "transition": "no point has an LR or WD switch (lr=two_stage or wd=two_stage)",
    "decision": "needs a sweep over hidden",
    "factorial": "needs the LR x WD factorial: lr=linear,two_stage wd=constant,two_stage (completed points "
                 "in all four cells)",
    "diagnostics": "no collapse-diagnostic column (loss_gap, hidden_cosine, flip_rate...) in these metrics.csv "
                   "files",
}


def build_tables(sweep: Sweep, steps: list[int] | None = None, collapse_steps: tuple[int, int] | None = None):
    """{name: (markdown frame, csv frame)} plus the parameters used (steps, early, late, cell keys)."""
    curves = point_curves(sweep)
    keys = cell_keys(sweep)
    steps = sorted(steps) if steps else default_steps(sweep, curves)
    evaluated = sorted({s for c in curves.values() for s in c.index})
    if collapse_steps:
        early, late = collapse_steps
    else:  # seed 002 divides the 4k tokens by the 1k ones, of 10k steps: 10% and 40% of the run
        total = max([s for s in sweep.points.last_step.dropna()] + evaluated[-1:] or [0])
        early, late = nearest_step(evaluated, 0.1 * total), nearest_step(evaluated, 0.4 * total)
    pp = per_point(sweep, curves, steps, early, late, keys)
    tr = per_transition(sweep, curves, keys)
    diagnostics = present_diagnostics(sweep.frame)
    dp = per_point_diagnostics(sweep, curves, keys, diagnostics)
    tables = {
        "points": points_table(sweep),
        "results": results_table(pp, keys, steps),
        "transition": transition_table(tr, keys),
        "size": size_table(pp, keys),
        "collapse": collapse_table(pp, keys, early, late),
        "decision": decision_table(pp, keys, late),
        "factorial": factorial_table(sweep, pp, keys),
        "diagnostics": diagnostics_table(dp, keys, diagnostics),
    }
    return tables, {"steps": steps, "early": early, "late": late, "keys": keys, "per_point": pp,
                    "diagnostics": diagnostics, "per_point_diagnostics": dp}


def render(sweep: Sweep, tables: dict, params: dict) -> str:
    counts = sweep.points.status.value_counts()
    lines = [f"{len(sweep.points)} grid points: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    for _, p in sweep.unfinished.iterrows():
        where = f" (expected at {p.folder})" if p.folder and p.status == "missing" else ""
        lines.append(f"- {p.point}: {p.status}{where}")
    lines += [f"- {w}" for w in sweep.warnings]
    text = "\n".join(lines) + "\n"
    for name, (md, _) in tables.items():
        text += f"\n## {TITLES[name]}\n\n"
        if name == "collapse":
            text += (f"tokens at step {params['late']} / tokens at step {params['early']}; classes: <0.2 strong, "
                     f"0.2-0.5 moderate, 0.5-0.8 minimal, >0.8 stable (seed 002).\n\n")
        if name == "factorial" and len(md):
            text += ("Effects on the cell means of completed points, 95% t intervals (pooled within-cell "
                     "variance); interaction = difference of differences.\n\n")
        if name == "diagnostics" and len(md):
            text += (f"Deepest collapse = the evaluation with the fewest unique tokens (ties: the earliest). Verdict: "
                     f"unigram phase = |loss gap| < {UNIGRAM_GAP} nats and <= {FEW_TOKENS} tokens; representation "
                     f"collapse = hidden cos > {COSINE_HIGH}; weights churning = flip rate > {CHURN_FACTOR:g}x the "
                     f"point's median; greedy output loops = greedy rep3 >= {REPEAT_HIGH}. Empty cells: not measured "
                     f"at that row.\n\n")
        text += (to_markdown(md) if len(md) else f"Not applicable: {EMPTY.get(name, 'no rows')}.") + "\n"
    return text


def write_outputs(sweep: Sweep, tables: dict, params: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (md, csv) in tables.items():
        (out / f"{name}.md").write_text((to_markdown(md) if len(md) else f"Not applicable: {EMPTY.get(name)}.") + "\n")
        csv.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    (out / "tables.md").write_text(render(sweep, tables, params))
    written.append(out / "tables.md")
    if plots:
        from analysis.plots import save_plots

        written += save_plots(sweep, out, params["early"], params["late"], params["keys"], params["per_point"])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="hydra.sweep.dir of a -m run")
    parser.add_argument("--steps", nargs="+", type=int, help="steps of the results table (default: a handful "
                        "of evenly spaced evaluated steps)")
    parser.add_argument("--collapse-steps", nargs=2, type=int, metavar=("EARLY", "LATE"),
                        help="collapse ratio = tokens(LATE) / tokens(EARLY); also the decision-tree step "
                             "(default: the evaluations nearest 10%% and 40%% of the run, seed 002's 1k/4k of 10k)")
    parser.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/analysis)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweeps(args.sweep_dirs)
    except NotASweep as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tables, params = build_tables(sweep, args.steps, tuple(args.collapse_steps) if args.collapse_steps else None)
    print(render(sweep, tables, params))
    out = args.out or Path(args.sweep_dirs[0]) / "analysis"
    written = write_outputs(sweep, tables, params, out, plots=not args.no_plots)
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
