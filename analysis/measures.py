"""Per-point measures: from a loaded Sweep to one row per point (or per switch), the numbers the tables
aggregate over seeds and the plots draw. Uses analysis.rules for every class; knows nothing of tables or files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fmt import fmt_value, step_label
from analysis.load import CONFIG_COLUMNS, Sweep
from analysis.rules import (Rules, diverged, longest_stall, ratio_class, signature_parts, signature_verdict, token_class,
                            too_short, trajectory_class, verdict)
from bitnet.records import FINISHED_STATUSES, uncomputed

# Collapse diagnostics (bitnet/diagnostics.py) that the diagnostics table shows at each point's deepest collapse
# and final evaluation: (metrics.csv column, header, number format). unique_tokens is always shown; the others
# only when some point of the sweep has a value for them.
DIAGNOSTICS = [("unique_tokens", "tokens", "tokens"), ("loss_gap", "loss gap", "drop"),
               ("hidden_cosine", "hidden cos", "cos"), ("effective_tokens", "eff. tokens", "eff"),
               ("softmax_entropy", "softmax entropy", "eff"), ("flip_rate", "flip rate", "rate"),
               ("zero_frac", "zero frac", "cos"), ("greedy_repeat3", "greedy rep3", "ratio")]
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
    configs = [sweep.configs.get(point, {}) for point in zip(known.sweep, known.point)]
    candidates = list(dict.fromkeys([*CONFIG_COLUMNS, *(k for c in configs for k in c), "eval_positions"]))
    swept_groups = tuple(f"{k.removesuffix('.name')}." for k in keys)
    cells = list(zip(*(known[k].astype(str) for k in keys))) if keys else [()] * len(known)
    differing = []
    for key in candidates:
        # seed: what seeds of one cell differ by; uncomputed keys (bitnet.records.UNCOMPUTED_KEYS: how a run
        # executes, and the presets' grid.* helpers, compared under the keys they set) never keep points apart
        if (key in keys or key == "seed" or uncomputed(key)
                or key.startswith(swept_groups) and key not in CONFIG_COLUMNS):
            continue
        values = known[key].tolist() if key in known else [c.get(key) for c in configs]
        seen = {}  # cell -> the distinct values of this key among its points (None and NaN are no value)
        for cell, value in zip(cells, values):
            if value is not None and not (isinstance(value, float) and value != value):
                seen.setdefault(cell, set()).add(repr(value))
        if any(len(texts) > 1 for texts in seen.values()):
            differing.append(key)
            if key not in points:
                points[key] = [sweep.configs.get(point, {}).get(key) for point in zip(points.sweep, points.point)]
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
    frame = sweep.frame[sweep.frame["step"].notna()]
    eval_loss = pd.to_numeric(frame["eval_loss"], errors="coerce") if "eval_loss" in frame else \
        pd.Series(float("nan"), index=frame.index)
    # an object column: pandas would store the labels as Arrow strings, whose per-item access costs more than
    # the rest of the per-point measures at 400 points
    phases = np.empty(len(frame), dtype=object)
    phases[:] = [rules.phase(loss, ln_vocab, unigram)
                 for loss, ln_vocab, unigram in zip(eval_loss, frame["ln_vocab"], frame["unigram_entropy"])]
    frame = frame.assign(phase=phases).astype({"step": int})
    # row ranges per point (the frame holds each point's rows together), cut by position: no groupby copies
    key = list(zip(frame["sweep"], frame["point"]))
    frame = frame.set_index("step")  # once: per point it would copy the wide frame 400 times
    curves, start = {}, 0
    for end in range(1, len(key) + 1):
        if end == len(key) or key[end] != key[start]:
            curves[key[start]] = frame.iloc[start:end]
            start = end
    for point in zip(sweep.points.sweep, sweep.points.point):  # a point without a row with a step
        if point not in curves:
            curves[point] = frame.iloc[:0]
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


def unjudged(sweep: Sweep, point: pd.Series, curve: pd.DataFrame) -> tuple[str, str]:
    """(too short, diverged): why the point cannot be classed (analysis.rules.too_short and .diverged), "" when
    it can. Warm-up from the point's resolved config (`lr.warmup`, 0 when unknown)."""
    steps = curve.index.to_numpy()
    counted = ~np.isnan(np.asarray(curve["unique_tokens"], dtype=float)) if "unique_tokens" in curve else []
    last = int(steps[counted][-1]) if np.any(counted) else None
    warmup = sweep.configs.get((point["sweep"], point["point"]), {}).get("lr.warmup")
    short = too_short(last, warmup, curve["phase"].to_numpy()[counted][-1]) if last is not None else ""
    losses = []
    for column in ("loss", "eval_loss"):
        values = np.asarray(curve[column], dtype=float) if column in curve else np.array([])
        losses += [(int(s), column, float(v)) for s, v in zip(steps[~np.isnan(values)], values[~np.isnan(values)])]
    error = point.get("error")
    return short, diverged(point["status"], error if isinstance(error, str) else None, sorted(losses), point.get("ln_vocab"))


def collapse_measures(curve: pd.DataFrame, rules: Rules, first_switch, finished: bool) -> dict:
    """First step at or below the collapse level, the minimum and its step (the first, on ties), the recovery
    factor final / minimum, the loss from the first row with a loss up to the minimum, the trajectory class.
    Reads each column once as an array (per-row pandas lookups cost more than the rest of a 400-point sweep)."""
    out = {"first_collapse": float("nan"), "min_tokens": float("nan"), "min_step": float("nan"),
           "recovery_factor": float("nan"), "loss_start": float("nan"), "loss_at_min": float("nan"),
           "loss_kind": "", "trajectory": "", "phase_at_min": "", "stall_start": float("nan"),
           "stall_end": float("nan"), "stall_phase": "", "plateau": ""}
    if "unique_tokens" not in curve:
        return out
    all_steps = curve.index.tolist()
    all_tokens = np.asarray(curve["unique_tokens"], dtype=float)
    counted = ~np.isnan(all_tokens)
    if not counted.any():
        return out
    phases = curve["phase"].tolist() if "phase" in curve else [None] * len(curve)
    steps, tokens = [s for s, c in zip(all_steps, counted) if c], all_tokens[counted].tolist()
    by_step = list(zip(steps, tokens))
    out["plateau"] = "none"
    stall = longest_stall(by_step, rules)
    if stall:  # reported whether or not a switch ends it: a plateau the run leaves on its own is still one
        on_it = [p for s, p in zip(all_steps, phases) if stall[0] <= s <= stall[1] and p]
        on_it = ", ".join(dict.fromkeys("phase unknown" if p == "unknown" else p for p in on_it))
        out.update(stall_start=stall[0], stall_end=stall[1], stall_phase=on_it,
                   plateau=f"{step_label(stall[0])}-{step_label(stall[1])} ({fmt_value(stall[1] - stall[0], 'step')} "
                           f"steps), {on_it}")
    collapsed = [s for s, t in by_step if rules.collapsed(t)]
    first_min = int(np.argmin(all_tokens[counted]))  # the first step at the minimum
    lowest, min_step = tokens[first_min], steps[first_min]
    out.update(first_collapse=collapsed[0] if collapsed else float("nan"),
               min_tokens=curve["unique_tokens"].to_numpy()[counted][first_min], min_step=min_step,  # its own dtype
               phase_at_min=phases[all_steps.index(min_step)])
    if finished and lowest > 0:
        out["recovery_factor"] = tokens[-1] / lowest
    column = _loss_column(curve)
    if column:
        losses = pd.to_numeric(curve[column], errors="coerce").to_numpy(dtype=float)
        start = [v for s, v in zip(all_steps, losses) if s <= min_step and not np.isnan(v)]
        at_min = losses[all_steps.index(min_step)]
        out.update(loss_start=start[0] if start else float("nan"), loss_at_min=float(at_min),
                   loss_kind="eval" if column == "eval_loss" else "train")
    out["trajectory"] = trajectory_class(by_step, rules, first_switch, finished)
    return out


def evaluations(curve: pd.DataFrame) -> list[dict]:
    """[{step, tokens, phase, loss, eval_loss}] for every row of a point's curve, read column by column (not
    iterrows: 10x faster). `loss` is the eval loss when the point has one, else the training loss; NaN where
    absent. What the collapse signature and the diagnosis (analysis.patterns) judge a run by."""
    nothing = [float("nan")] * len(curve)

    def numbers(column):
        return pd.to_numeric(curve[column], errors="coerce").tolist() if column and column in curve else nothing

    return [{"step": step, "tokens": tokens, "phase": phase, "loss": loss, "eval_loss": eval_loss}
            for step, tokens, phase, loss, eval_loss in zip(
                curve.index.tolist(), curve["unique_tokens"].tolist() if "unique_tokens" in curve else nothing,
                curve["phase"].tolist() if "phase" in curve else [None] * len(curve),
                numbers(_loss_column(curve)), numbers("eval_loss"))]


def signature_measures(curve: pd.DataFrame, rules: Rules, first_switch, ln_vocab, total_steps=None) -> dict:
    """The collapse-signature parts, their numbers and the verdict of one point (analysis.rules.signature_parts)."""
    parts = signature_parts(evaluations(curve), rules, first_switch, None if pd.isna(ln_vocab) else float(ln_vocab),
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
        by_step = dict(zip(curve.index, curve["unique_tokens"])) if "unique_tokens" in curve else {}
        for step in steps:  # a dict, not .at: thousands of lookups over a large sweep
            row[f"tokens@{step}"] = by_step.get(step, float("nan"))
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
        row["tokens_early"], row["tokens_late"] = by_step.get(early, float("nan")), by_step.get(late, float("nan"))
        row["phase_late"] = at(curve, late, "phase") if late in curve.index else ""
        row["ratio"] = row["tokens_late"] / row["tokens_early"] if row["tokens_early"] else float("nan")
        row["max_tokens"] = tokens.max() if len(tokens) else float("nan")
        row.update(collapse_measures(curve, rules, first_switch, finished))
        total = point.get("total_steps")
        row.update(signature_measures(curve, rules, first_switch, point.get("ln_vocab"),
                                      point.get("train.steps") if pd.isna(total) else total))
        if point["status"] not in FINISHED_STATUSES:  # a run that may still change (or never ran) is not judged
            row["signature"] = f"undecided ({point['status']})"
        row["too_short"], row["diverged"] = unjudged(sweep, point, curve)
        row.update(seed_classes(row, rules))
        rows.append(row)
    return pd.DataFrame(rows)


def seed_classes(row: dict, rules: Rules) -> dict:
    """The classes of one seed, which the tables count over a cell's seeds (k/n) instead of classing the mean.
    A point that diverged or is too short to tell gets that reason in place of every class (`unjudged`)."""
    reason = row["diverged"] or row["too_short"]
    lowest, after = row["lowest_stage1"], row["after_switch"]
    classes = {
        "unjudged": reason,
        "ratio_class": ratio_class(row["ratio"]) if not pd.isna(row["ratio"]) else "",
        "status_late": "{} ({})".format(*token_class(row["tokens_late"])) if not pd.isna(row["tokens_late"]) else "",
        "status_final": "{} ({})".format(*token_class(row["final_tokens"])) if not pd.isna(row["final_tokens"]) else "",
        "collapse_s1": "" if pd.isna(lowest) else "✓" if rules.collapsed(lowest) else "✗",
        # recovered = above the collapse level after the switch, having been at or below it before it
        "recovery_s2": "" if pd.isna(after) or pd.isna(lowest) else "not collapsed" if not rules.collapsed(lowest)
        else "✗" if rules.collapsed(after) else "✓",
    }
    if reason:
        classes.update({k: reason for k in classes if k != "unjudged"},
                       trajectory=reason, signature=reason)
        if row["diverged"]:  # its last figures are not a trained model's: no "ends collapsed" from them
            classes.update(final_tokens=float("nan"), final_phase="", recovery_factor=float("nan"))
    return classes


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


def per_point_diagnostics(sweep: Sweep, curves: dict, keys: list[str], columns: list[str],
                          reasons: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per point: the diagnostic `columns` (and unique tokens) at its deepest collapse (the evaluation
    with the fewest unique tokens, ties -> the earliest) and at its final evaluation (finished points only, as in
    the other tables), with the verdict tags and the learning phase of each. `reasons`: each point's (too short,
    diverged) in the points' order when per_point has them already (else `unjudged` is asked here)."""
    columns = ["unique_tokens"] + [c for c in columns if c != "unique_tokens"]
    rows = []
    for i, (_, point) in enumerate(sweep.points.iterrows()):
        curve = curves[(point["sweep"], point["point"])]
        short, blown = reasons[i] if reasons is not None else unjudged(sweep, point, curve)
        # the two rows by position, from each column's array: no copy of the wide frame, no Series per row
        present = {c: curve[c].to_numpy() for c in columns if c in curve}
        tokens = np.asarray(present["unique_tokens"], dtype=float) if "unique_tokens" in present else np.array([])
        evaluated = np.flatnonzero(~np.isnan(tokens))
        flips = pd.to_numeric(curve["flip_rate"], errors="coerce").dropna() if "flip_rate" in curve else []
        median = float(flips.median()) if len(flips) else float("nan")
        row = {**{k: point[k] for k in keys}, "seed": point.get("seed"), "point": point["point"],
               "status": point["status"], "unigram_entropy": point.get("unigram_entropy"), "flip_median": median}
        finished = point["status"] in FINISHED_STATUSES and len(evaluated)
        positions = {"deepest": evaluated[np.argmin(tokens[evaluated])] if len(evaluated) else None,  # first minimum
                     "final": evaluated[-1] if finished else None}
        for where, position in positions.items():
            row[f"step@{where}"] = curve.index[position] if position is not None else float("nan")
            values = {c: present[c][position] if position is not None and c in present else float("nan")
                      for c in columns}
            for column, value in values.items():
                row[f"{column}@{where}"] = pd.to_numeric(value, errors="coerce")
            row[f"verdict@{where}"] = blown or short or "; ".join(verdict(values, median)) or "–"
            row[f"phase@{where}"] = curve["phase"].iat[position] if position is not None else ""
        rows.append(row)
    return pd.DataFrame(rows)
