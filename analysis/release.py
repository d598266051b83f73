"""The collapse signature's parts as numbers, for one run: the few-token plateau (where it starts, how long it
lasts, its share of stage 1, the learning phase it sits in), how much the loss rose while it lasted, and the
release: the loss and token count at the last evaluation at or before the switch and at the evaluation a
window after it. Plain numbers in, plain numbers out (no pandas, no Rules): analysis.rules turns them into the
signature's yes / no / unknown, and the factorial effects and the phase map use them as responses.

Why a window: the investigation judged the release by comparing step 5000 (the switch) with step 6000 of a
10000-step run, a tenth of the run later. A run evaluated every 25 steps shows after one evaluation only the
first few steps of what the switch sets off, so the release is read at the evaluation nearest to
switch + window, window = a share of the run's total steps (default 0.1; 0 gives the first evaluation after
the switch). A run whose evaluations stop before switch + window has an unknown release, not a missing one.

    stage-1 rise    loss at the last evaluation at or before the switch minus the lowest loss of stage 1 (>= 0;
                    0 when the loss is still falling at the switch). The plateau rise is the same over the
                    plateau's own evaluations: what the stall rule uses.
    release drop    loss before the switch minus loss at the window's evaluation (positive: the loss fell).
"""

from __future__ import annotations

from collections import Counter

from bitnet.phases import PHASES, UNKNOWN, present

NO_PLATEAU = "none"



def window_steps(total_steps, share: float) -> int:
    """The release window in steps: `share` of the run's total steps, rounded."""
    return int(round(share * total_steps))


def rise(losses: list[float]) -> float:
    """The last loss minus the lowest one (NaN with fewer than two losses)."""
    losses = [v for v in losses if present(v)]
    return losses[-1] - min(losses) if len(losses) >= 2 else float("nan")


def plateau_phase(phases: list[str]) -> str:
    """The phase most of the plateau's evaluations are in (ties: the one nearer uniform); `unknown` when no
    evaluation has a phase; `none` without a plateau."""
    known = [p for p in phases if p in PHASES]
    if not phases:
        return NO_PLATEAU
    if not known:
        return UNKNOWN
    counts = Counter(known)
    return max(PHASES, key=lambda p: (counts[p], -PHASES.index(p)))


def release_rows(rows: list[dict], switch_step, total_steps, share: float) -> tuple[dict | None, dict | None, str]:
    """(before, after, why): the last evaluation at or before the switch, the evaluation after it nearest to
    switch + window (ties: the later), and why the release cannot be judged ("" when it can)."""
    if switch_step is None:
        return None, None, "no switch"
    before = next((e for e in reversed(rows) if e["step"] <= switch_step), None)
    later = [e for e in rows if e["step"] > switch_step]
    target = switch_step + window_steps(total_steps, share)
    if before is None:
        return None, None, "no evaluation before the switch"
    if not later or later[-1]["step"] < target:
        last = later[-1]["step"] if later else before["step"]
        return before, None, (f"the evaluations stop at step {last}, before switch + window = {switch_step} + "
                              f"{target - switch_step} = {target}")
    after = min(later, key=lambda e: (abs(e["step"] - target), -e["step"]))
    return before, after, ""


def signature_numbers(evaluations: list[dict], switch_step=None, total_steps=None, *, plateau_tokens: float,
                      window_share: float) -> dict:
    """evaluations: [{step, tokens, loss, phase}] in step order (loss: eval loss when the run has one, else the
    training loss; NaN where absent). The plateau is the last stretch of evaluations with at most
    `plateau_tokens` unique tokens that lasts to the end of stage 1 (the switch, or the end of a run without
    one). `total_steps` (the run's planned length) sets the window; without it, the last evaluated step."""
    rows = [e for e in evaluations if present(e.get("tokens"))]
    nan = float("nan")
    out = {"plateau_start": None, "plateau_steps": 0, "plateau_fraction": nan, "plateau_phase": NO_PLATEAU,
           "plateau_rise": nan, "stage1_rise": nan, "window": None, "before_step": None, "after_step": None,
           "loss_before": nan, "loss_after": nan, "release_drop": nan, "tokens_before": nan, "tokens_after": nan,
           "release_why": ""}
    if not rows:
        out["plateau_phase"] = UNKNOWN
        out["release_why"] = "no evaluation"
        return out
    total = total_steps if present(total_steps) and total_steps else rows[-1]["step"]
    stage1 = [e for e in rows if switch_step is None or e["step"] <= switch_step]
    end = switch_step if switch_step is not None else rows[-1]["step"]
    start = None
    for e in stage1:  # the last stretch of few-token evaluations that reaches the end of stage 1
        start = (start if start is not None else e["step"]) if e["tokens"] <= plateau_tokens else None
    if start is not None and end <= start:  # a single few-token evaluation at the switch lasts no steps
        start = None
    span = max(end - (stage1[0]["step"] if stage1 else 0), 1)
    out["plateau_fraction"] = (end - start) / span if start is not None else 0.0
    out["stage1_rise"] = rise([e.get("loss") for e in stage1])
    if start is not None:
        plateau = [e for e in stage1 if e["step"] >= start]
        out.update(plateau_start=start, plateau_steps=end - start,
                   plateau_phase=plateau_phase([e.get("phase") or UNKNOWN for e in plateau]),
                   plateau_rise=rise([e.get("loss") for e in plateau]))
    before, after, why = release_rows(rows, switch_step, total, window_share)
    out["window"] = window_steps(total, window_share) if switch_step is not None else None
    out["release_why"] = why
    if before:
        out.update(before_step=before["step"], loss_before=before.get("loss", nan), tokens_before=before["tokens"])
    if after:
        out.update(after_step=after["step"], loss_after=after.get("loss", nan), tokens_after=after["tokens"])
        if present(out["loss_before"]) and present(out["loss_after"]):
            out["release_drop"] = out["loss_before"] - out["loss_after"]
        else:
            out["release_why"] = f"no loss at step {before['step'] if not present(out['loss_before']) else after['step']}"
    return out
