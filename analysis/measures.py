"""Per-point measures: from a loaded Sweep to one row per point (or per switch), the numbers the tables
aggregate over seeds and the plots draw. Uses analysis.rules for every class; knows nothing of tables or files."""

from __future__ import annotations

import pandas as pd

from analysis.fmt import fmt_value, step_label
from analysis.load import CONFIG_COLUMNS, Sweep
from analysis.rules import Rules, signature_parts, signature_verdict, trajectory_class, verdict
from bitnet.records import FINISHED_STATUSES

# Collapse diagnostics (bitnet/diagnostics.py) that the diagnostics table shows at each point's deepest collapse
# and final evaluation: (metrics.csv column, header, number format). unique_tokens is always shown; the others
# only when some point of the sweep has a value for them.
DIAGNOSTICS = [("unique_tokens", "tokens", "tokens"), ("loss_gap", "loss gap", "drop"),
               ("hidden_cosine", "hidden cos", "cos"), ("effective_tokens", "eff. tokens", "eff"),
               ("softmax_entropy", "softmax entropy", "eff"), ("flip_rate", "flip rate", "rate"),
               ("zero_frac", "zero frac", "cos"), ("greedy_repeat3", "greedy rep3", "ratio")]
# Config keys that change how a run executes but not what it computes: never a reason to keep points apart.
EXECUTION_KEYS = {"seed", "device", "compile", "threads", "progress", "data.cache_dir"}
SEEDS_STEPS = (1000, 4000)  # the seeds' collapse ratio: tokens at step 4k / tokens at step 1k


# ---- which points are seeds of one cell ---------------------------------------------------------------------
def cell_keys(sweep: Sweep, pool: bool = False) -> tuple[list[str], list[str]]:
    """(keys, differing): what tells the cells of the tables apart, and the keys beyond the swept ones that
    differ between points that would otherwise be averaged as seeds (e.g. two sweeps of the same grid with
    different `lr.warmup` or evaluation positions). Points are seeds of one cell only when they differ in
    nothing but `seed`: the differing keys become cell keys (and columns of sweep.points) unless `pool`."""
    keys = [k for k in sweep.swept if k != "seed"]
    points = sweep.points
    known = points[points.status != "missing"]
    configs = {(p.sweep, p.point): sweep.configs.get((p.sweep, p.point), {}) for _, p in known.iterrows()}
    candidates = list(dict.fromkeys([*CONFIG_COLUMNS, *(k for c in configs.values() for k in c), "eval_positions"]))
    swept_groups = tuple(f"{k.removesuffix('.name')}." for k in keys)
    differing = []
    for key in candidates:
        if key in keys or key in EXECUTION_KEYS or key.startswith(swept_groups) and key not in CONFIG_COLUMNS:
            continue
        values = known[key] if key in known else pd.Series(
            [configs[(p.sweep, p.point)].get(key) for _, p in known.iterrows()], index=known.index, dtype=object)
        texts = values.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else repr(v))
        groups = texts.groupby([known[k].astype(str) for k in keys]) if keys else [((), texts)]
        if any(block.dropna().nunique() > 1 for _, block in groups):
            differing.append(key)
            if key not in points:
                points[key] = [sweep.configs.get((p.sweep, p.point), {}).get(key) for _, p in points.iterrows()]
    return (keys if pool else keys + differing), differing


# ---- curves and steps ---------------------------------------------------------------------------------------
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


def point_curves(sweep: Sweep, rules: Rules = Rules()) -> dict:
    """(sweep, point) -> that point's metric rows indexed by step (empty for missing points), with the learning
    phase of every row (`phase`)."""
    curves = {}
    points = sweep.points.set_index(["sweep", "point"])
    for key, block in sweep.frame.groupby(["sweep", "point"], sort=False):
        curve = block.dropna(subset=["step"]).astype({"step": int}).set_index("step")
        ln_vocab, unigram = points.at[key, "ln_vocab"], points.at[key, "unigram_entropy"]
        eval_loss = curve["eval_loss"] if "eval_loss" in curve else pd.Series(float("nan"), index=curve.index)
        curve["phase"] = [rules.phase(loss, ln_vocab, unigram) for loss in pd.to_numeric(eval_loss, errors="coerce")]
        curves[key] = curve
    return curves


def evaluated_steps(curves: dict) -> list[int]:
    return sorted({s for c in curves.values() for s in c.index})


def nearest_step(steps, target: float):
    steps = [s for s in steps if s > 0] or list(steps)
    return min(steps, key=lambda s: (abs(s - target), s)) if steps else None


def default_collapse_steps(sweep: Sweep, curves: dict) -> tuple[int, int, str]:
    """(early, late, why): the seeds' steps 1k and 4k when the sweep evaluated them, else the evaluations
    nearest 10% and 40% of the run (the seeds' 1k and 4k of 10k)."""
    evaluated = evaluated_steps(curves)
    if all(s in evaluated for s in SEEDS_STEPS):
        return (*SEEDS_STEPS, "the seeds' steps 1k and 4k")
    total = max([s for s in sweep.points.last_step.dropna()] + evaluated[-1:] or [0])
    early, late = nearest_step(evaluated, 0.1 * total), nearest_step(evaluated, 0.4 * total)
    return early, late, (f"the evaluations nearest 10% and 40% of the {step_label(total)}-step run (no "
                         f"evaluation at both 1k and 4k, the seeds' steps of a 10k-step run)")


def default_steps(sweep: Sweep, curves: dict, count: int = 6) -> list[int]:
    """A handful of evenly spaced evaluated steps (not step 0), the last one, and the evaluations either side
    of the most common switch so that the switch column falls between two shown steps."""
    evaluated = [s for s in evaluated_steps(curves) if s > 0]
    if len(evaluated) <= count + 2:
        return evaluated
    last = evaluated[-1]
    chosen = {nearest_step(evaluated, last * (i + 1) / count) for i in range(count)}
    switches = [s for _, p in sweep.points.iterrows() for s, _ in switch_events(p)[:1]]
    if switches:
        switch = max(set(switches), key=switches.count)
        chosen |= {max([s for s in evaluated if s <= switch], default=evaluated[0]),
                   min([s for s in evaluated if s > switch], default=last)}
    return sorted(chosen)


def at(curve: pd.DataFrame, step, column: str):
    if step is None or pd.isna(step) or step not in curve.index or column not in curve:
        return float("nan")
    return curve.at[step, column]


# ---- one row per point --------------------------------------------------------------------------------------
def _loss_column(curve: pd.DataFrame) -> str | None:
    """eval loss when the point has one (plain cross-entropy on fixed positions), else the training loss."""
    for column in ("eval_loss", "loss"):
        if column in curve and pd.to_numeric(curve[column], errors="coerce").notna().any():
            return column
    return None


def collapse_measures(curve: pd.DataFrame, rules: Rules, first_switch, finished: bool) -> dict:
    """First step at or below the collapse level, the minimum and its step (the first, on ties), the recovery
    factor final / minimum, the loss from the first row with a loss up to the minimum, the trajectory class."""
    tokens = curve["unique_tokens"].dropna() if "unique_tokens" in curve else pd.Series(dtype=float)
    out = {"first_collapse": float("nan"), "min_tokens": float("nan"), "min_step": float("nan"),
           "recovery_factor": float("nan"), "loss_start": float("nan"), "loss_at_min": float("nan"),
           "loss_kind": "", "trajectory": "", "phase_at_min": ""}
    if tokens.empty:
        return out
    collapsed = [s for s, t in tokens.items() if rules.collapsed(t)]
    min_step = tokens.idxmin()
    out.update(first_collapse=collapsed[0] if collapsed else float("nan"), min_tokens=tokens.min(), min_step=min_step,
               phase_at_min=curve.at[min_step, "phase"])
    if finished and tokens.min() > 0:
        out["recovery_factor"] = tokens.iloc[-1] / tokens.min()
    column = _loss_column(curve)
    if column:
        losses = pd.to_numeric(curve[column], errors="coerce").dropna()
        start = losses[losses.index <= min_step]
        out.update(loss_start=start.iloc[0] if len(start) else float("nan"),
                   loss_at_min=losses.get(min_step, float("nan")), loss_kind="eval" if column == "eval_loss" else "train")
    out["trajectory"] = trajectory_class(list(tokens.items()), rules, first_switch, finished)
    return out


def signature_measures(curve: pd.DataFrame, rules: Rules, first_switch, ln_vocab, total_steps=None) -> dict:
    """The collapse-signature parts, their numbers and the verdict of one point (analysis.rules.signature_parts)."""
    column = _loss_column(curve)
    evaluations = [{"step": step, "tokens": row.get("unique_tokens"), "phase": row.get("phase"),
                    "loss": pd.to_numeric(row.get(column), errors="coerce") if column else float("nan")}
                   for step, row in curve.iterrows()]
    parts = signature_parts(evaluations, rules, first_switch, None if pd.isna(ln_vocab) else float(ln_vocab),
                            None if pd.isna(total_steps) else float(total_steps))
    return {"signature": signature_verdict(parts) if len(curve) else "",
            **{f"signature_{k}": v for k, v in parts.items()}}


def per_point(sweep: Sweep, curves: dict, steps: list[int], early: int, late: int, keys: list[str],
              rules: Rules = Rules()) -> pd.DataFrame:
    rows = []
    for _, point in sweep.points.iterrows():
        curve = curves[(point["sweep"], point["point"])]
        events = switch_events(point)
        first_switch = events[0][0] if events else None
        row = {**{k: point[k] for k in keys}, "seed": point.get("seed"), "point": point["point"],
               "status": point["status"], "reached_step": point["reached_step"],
               "switch": "; ".join(f"{label} @{step_label(s)}" for s, label in events),
               "first_switch": first_switch, "params": point["params_total"],
               "non_embedding": point["params_non_embedding"], "positions": point["eval_positions"],
               "distinct_targets": point["eval_unique_targets"], "label_smoothing": point.get("train.label_smoothing")}
        for step in steps:
            row[f"tokens@{step}"] = at(curve, step, "unique_tokens")
        tokens = curve["unique_tokens"].dropna() if "unique_tokens" in curve else pd.Series(dtype=float)
        stage1 = tokens[tokens.index <= first_switch] if first_switch is not None else tokens
        after_steps = [s for s in tokens.index if first_switch is not None and s > first_switch]
        row["lowest_stage1"] = stage1.min() if len(stage1) else float("nan")
        row["phase_lowest_stage1"] = curve.at[stage1.idxmin(), "phase"] if len(stage1) else ""
        row["after_switch"] = tokens[after_steps[0]] if after_steps else float("nan")
        finished = point["status"] in FINISHED_STATUSES and len(tokens) > 0
        row["final_step"] = tokens.index[-1] if len(tokens) else float("nan")
        row["final_tokens"] = tokens.iloc[-1] if finished else float("nan")
        row["final_phase"] = curve.at[tokens.index[-1], "phase"] if finished else ""
        row["final_eval_loss"] = curve["eval_loss"].dropna().iloc[-1] \
            if finished and "eval_loss" in curve and curve["eval_loss"].notna().any() else float("nan")
        row["tokens_early"], row["tokens_late"] = at(curve, early, "unique_tokens"), at(curve, late, "unique_tokens")
        row["phase_late"] = at(curve, late, "phase") if late in curve.index else ""
        row["ratio"] = row["tokens_late"] / row["tokens_early"] if row["tokens_early"] else float("nan")
        row["max_tokens"] = tokens.max() if len(tokens) else float("nan")
        row.update(collapse_measures(curve, rules, first_switch, finished))
        total = point.get("total_steps")
        row.update(signature_measures(curve, rules, first_switch, point.get("ln_vocab"),
                                      point.get("train.steps") if pd.isna(total) else total))
        if point["status"] not in FINISHED_STATUSES:  # a run that may still change (or never ran) is not judged
            row["signature"] = f"undecided ({point['status']})"
        rows.append(row)
    return pd.DataFrame(rows)


def data_errors(pp: pd.DataFrame) -> list[str]:
    """Unique-token counts above the number of evaluated positions: impossible, so an error in the data."""
    positions, tokens = pd.to_numeric(pp.positions, errors="coerce"), pd.to_numeric(pp.max_tokens, errors="coerce")
    bad = pp[positions.notna() & tokens.notna() & (tokens > positions)]
    return [f"{r.point}: {fmt_value(r.max_tokens, 'tokens')} unique tokens at one evaluation but only "
            f"{fmt_value(r.positions, 'tokens')} positions evaluated: an error in the data" for _, r in bad.iterrows()]


def per_transition(sweep: Sweep, curves: dict, keys: list[str]) -> pd.DataFrame:
    """One row per (point, switch): the last evaluation at or before the switch step S (the row at S is still
    stage 1, bitnet/schedules.py) and the first one after it, with the learning phase at each."""
    rows = []
    for _, point in sweep.points.iterrows():
        curve = curves[(point["sweep"], point["point"])]
        for step, label in switch_events(point):
            before = max([s for s in curve.index if s <= step], default=None)
            after = min([s for s in curve.index if s > step], default=None)
            row = {**{k: point[k] for k in keys}, "switch": f"{label} @{step_label(step)}", "switch_step": step,
                   "status": point["status"], "before_step": before, "after_step": after,
                   "phase_before": at(curve, before, "phase") if before is not None else "",
                   "phase_after": at(curve, after, "phase") if after is not None else ""}
            for column, name in (("loss", "loss"), ("eval_loss", "eval_loss"), ("unique_tokens", "tokens")):
                b, a = at(curve, before, column), at(curve, after, column)
                row[f"{name}_before"], row[f"{name}_after"] = b, a
                if name != "tokens":
                    row[f"{name}_drop"] = a - b
                    row[f"{name}_pct"] = (a - b) / b * 100 if b else float("nan")
            row["recovery"] = row["tokens_after"] / row["tokens_before"] if row["tokens_before"] else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


# ---- collapse diagnostics -----------------------------------------------------------------------------------
def present_diagnostics(frame: pd.DataFrame) -> list[str]:
    """The diagnostic columns that hold a value somewhere in the sweep (none for older runs)."""
    return [c for c, _, _ in DIAGNOSTICS[1:] if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def per_point_diagnostics(sweep: Sweep, curves: dict, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per point: the diagnostic `columns` (and unique tokens) at its deepest collapse (the evaluation
    with the fewest unique tokens, ties -> the earliest) and at its final evaluation (finished points only, as in
    the other tables), with the verdict tags and the learning phase of each."""
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
        for where, step in steps.items():
            row[f"step@{where}"] = step if step is not None else float("nan")
            values = {c: at(curve, step, c) for c in columns}
            for column, value in values.items():
                row[f"{column}@{where}"] = pd.to_numeric(value, errors="coerce")
            row[f"verdict@{where}"] = "; ".join(verdict(values, median)) or "–"
            row[f"phase@{where}"] = at(curve, step, "phase") if step is not None else ""
        rows.append(row)
    return pd.DataFrame(rows)
