"""The pattern of one run's curves: which of a documented set its unique-token counts and losses show, the rule
that fired with its thresholds, and the evaluations that decide it. Plain numbers in (no pandas, no files), so
that `analysis.diagnose` and the tests can feed it any run. The set and its rules (docs/diagnose.md):

    diverged                  analysis.rules.diverged fires (NaN/inf loss, or a loss above ln V)
    too short to tell         analysis.rules.too_short fires (within warm-up, or before warm-up + UNIGRAM_SPAN
                              steps without reaching the contextual phase); or a lasting collapse that lasts to
                              the end mostly in the contextual phase, its loss not rising and its tokens above
                              their lowest: a slow climb, which only a longer run tells from a plateau
    healthy                   never at or below the collapse level (10 tokens) after step 0
    brief unigram phase       at or below the collapse level only up to warm-up + UNIGRAM_SPAN steps, above it
      (normal)                from then on: the unigram phase every run passes through
    stall released by a       a lasting collapse (at or below the collapse level past warm-up + UNIGRAM_SPAN)
      switch                  that reaches a switch, and over the release window after it the loss drops at
                              least RELEASE_NATS with tokens x2 (the investigation's release), or, when the
                              collapse had stalled, at least MIN_RELEASE nats, or the tokens climb above the
                              collapse level
    collapse then recovery    a lasting collapse that ends above the collapse level with no switch between its
      without a switch        last collapsed evaluation and the recovery
    near-uniform stall        a lasting collapse that stalled: most of its evaluations near-uniform, or its loss
                              rising at least STALL_RISE nats from its lowest, or (no eval loss) within STALL_NATS
                              of ln V or of the run's first loss
    lasting unigram plateau   a lasting collapse that did not stall, mostly in the unigram phase
    lasting few-token plateau the same, mostly contextual or in no known phase
    undecided                 what no rule covers (e.g. collapsed at the last evaluation only), with the reason

Thresholds come from analysis.rules.Rules (collapse level, stall rise and nats, release nats and window), so the
options that change the tables change the diagnosis too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.release import plateau_phase, release_rows, rise
from analysis.rules import (RELEASE_FACTOR, UNIGRAM_SPAN, Rules, diverged, longest_stall, near_uniform_by_loss,
                            too_short)
from bitnet.phases import CONTEXTUAL, NEAR_UNIFORM, UNIGRAM, present

HEALTHY = "healthy"
BRIEF = "brief unigram phase (normal)"
RELEASED = "stall released by a switch"
RECOVERED = "collapse then recovery without a switch"
STALL = "near-uniform stall"
PLATEAU = "lasting unigram plateau"
FEW_TOKEN_PLATEAU = "lasting few-token plateau"
DIVERGED = "diverged"
TOO_SHORT = "too short to tell"
UNDECIDED = "undecided"
PATTERNS = (HEALTHY, BRIEF, RELEASED, RECOVERED, STALL, PLATEAU, FEW_TOKEN_PLATEAU, DIVERGED, TOO_SHORT, UNDECIDED)
# What each pattern means for a script: healthy (exit 0), inconclusive (exit 0, nothing to act on yet) or a
# pathology (exit 1).
HEALTHY_KIND, INCONCLUSIVE, PATHOLOGY = "healthy", "inconclusive", "pathology"
KIND = {HEALTHY: HEALTHY_KIND, BRIEF: HEALTHY_KIND, TOO_SHORT: INCONCLUSIVE, UNDECIDED: INCONCLUSIVE}
# nats: a stalled collapse (near-uniform or rising) that loses this much over the release window after a switch
# was released by it: twice the stall rule's rise, so that a stall's noise does not count
MIN_RELEASE = 0.2


def tokens_text(count) -> str:
    return f"{count:g} token" + ("" if count == 1 else "s")


def kind_of(pattern: str) -> str:
    return KIND.get(pattern, PATHOLOGY)



@dataclass
class Pattern:
    """One run's pattern, the rule that fired (with its thresholds and this run's numbers), the steps of the
    evaluations that decide it, and facts the causes use (the switch that released a stall, its label)."""

    name: str
    rule: str
    steps: list[int] = field(default_factory=list)
    switch: tuple[int, str] | None = None   # (step, label) of the switch that released it
    stalled: bool | None = None
    phase: str = ""
    final_tokens: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return kind_of(self.name)


def _stall(stretch: list[dict], before: list[dict], rules: Rules, ln_vocab) -> tuple[bool | None, str, float, str]:
    """(stalled, majority phase, loss rise, why) over the collapsed evaluations up to the switch or the end."""
    phase = plateau_phase([e.get("phase") or "unknown" for e in stretch])
    risen = rise([e.get("loss") for e in stretch])
    if present(risen) and risen >= rules.stall_rise:
        return True, phase, risen, f"its loss rose {risen:+.2f} nats from its lowest (>= {rules.stall_rise:g})"
    if phase == NEAR_UNIFORM:
        return True, phase, risen, "most of its evaluations are near-uniform"
    if phase in (UNIGRAM, CONTEXTUAL):
        return False, phase, risen, f"mostly {phase}, loss not rising"
    near, reference, what = near_uniform_by_loss(stretch, before, ln_vocab, rules)
    if near is None:
        return None, phase, risen, "no learning phase and too few losses to tell whether it stalled"
    return near, phase, risen, (f"no learning phase; its losses {'stay' if near else 'do not stay'} within "
                                f"{rules.stall_nats:g} nats of {what} ({reference:.2f})")


def classify(evaluations: list[dict], rules: Rules = Rules(), *, switches: list[tuple[int, str]] = (), warmup=None,
             total_steps=None, ln_vocab=None, status: str = "completed", error=None,
             training_losses: list[tuple[int, float]] = (), switch_unknown: str = "") -> Pattern:
    """evaluations: [{step, tokens, loss, phase}] in step order (loss: the eval loss when the run has one, else
    the training loss; NaN where absent); switches: [(step, label)] in step order; warmup: the LR warm-up in
    steps (0 when unknown); total_steps: the planned length (sets the release window); training_losses:
    [(step, loss)] for the divergence rule; switch_unknown: the schedules ("lr", "wd") whose switch the run does
    not state, so that "without a switch" cannot be claimed."""
    rows = [e for e in evaluations if present(e.get("tokens"))]
    if not rows:
        return Pattern(UNDECIDED, "undecided, because the run has no unique-token counts")
    warmup = int(warmup) if present(warmup) else 0
    losses = sorted([(s, "loss", v) for s, v in training_losses if present(v)]
                    + [(e["step"], "eval_loss", e["eval_loss"]) for e in evaluations if present(e.get("eval_loss"))])
    blown = diverged(status, error, losses, ln_vocab)
    last = rows[-1]
    final = last["tokens"]
    if blown:
        return Pattern(DIVERGED, blown, [rows[0]["step"], last["step"]], final_tokens=float("nan"))
    short = too_short(last["step"], warmup, last.get("phase") or "")
    if short:
        return Pattern(TOO_SHORT, short, [rows[0]["step"], last["step"]], final_tokens=final)
    level, span_end = rules.collapse_level, warmup + UNIGRAM_SPAN
    stretch = longest_stall([(e["step"], e["tokens"]) for e in rows], rules)
    collapsed = [e for e in rows if e["step"] > 0 and rules.collapsed(e["tokens"])]
    common = dict(final_tokens=final)
    if stretch is None or stretch[1] <= span_end:
        if rules.collapsed(final):
            return Pattern(UNDECIDED, f"undecided, because the run is at or below the collapse level "
                           f"({level:g} tokens) at its last evaluation only: run longer to tell a collapse from "
                           f"noise", [e["step"] for e in collapsed[-2:]] + [last["step"]], **common)
        if not collapsed:
            return Pattern(HEALTHY, f"healthy = above the collapse level ({level:g} tokens) at every evaluation "
                           f"after step 0", [rows[0]["step"], last["step"]], **common)
        end = max(e["step"] for e in collapsed)
        return Pattern(BRIEF, f"brief unigram phase = at or below {level:g} tokens only up to step {end}, within "
                       f"warm-up + {UNIGRAM_SPAN} = {span_end} steps, and above it from then on (normal: a model "
                       f"predicts the most frequent tokens before it uses the context)",
                       [collapsed[0]["step"], end, last["step"]], **common)

    start, end = stretch
    lasting = f"at or below {level:g} tokens from step {start} to {end}, past warm-up + {UNIGRAM_SPAN} = {span_end}"
    inside = [(s, label) for s, label in switches if start <= s <= end]
    upto = inside[0][0] if inside else end
    on_it = [e for e in rows if start <= e["step"] <= upto]
    stalled, phase, risen, why = _stall(on_it, [e for e in rows if e["step"] < start], rules, ln_vocab)
    with_loss = [e for e in on_it if present(e.get("loss"))]
    steps = [start, upto] + ([min(with_loss, key=lambda e: e["loss"])["step"]] if with_loss else [])
    if inside:
        step, label = inside[0]
        before, after, unknown = release_rows(rows, step, total_steps if present(total_steps) else last["step"],
                                              rules.release_window)
        if after is not None:
            drop = before["loss"] - after["loss"] if present(before.get("loss")) and present(after.get("loss")) else float("nan")
            steps += [before["step"], after["step"]]
            tokens = f"tokens {before['tokens']:g} -> {after['tokens']:g}"
            dropped = f"loss {-drop:+.2f} nats" if present(drop) else "loss unknown"
            reasons = []
            if present(drop) and drop >= rules.release_nats and after["tokens"] >= RELEASE_FACTOR * max(before["tokens"], 1):
                reasons.append(f"the loss drops >= {rules.release_nats:g} nats and tokens x{RELEASE_FACTOR:g}")
            if stalled and present(drop) and drop >= MIN_RELEASE:
                reasons.append(f"it had stalled ({why}) and the loss drops >= {MIN_RELEASE:g} nats")
            if not rules.collapsed(after["tokens"]):
                reasons.append(f"tokens climb above {level:g}")
            if reasons:
                ends = (f"; still at or below the collapse level at the end ({tokens_text(final)})"
                        if rules.collapsed(final) else f"; {tokens_text(final)} at the end")
                return Pattern(RELEASED, f"stall released by a switch: {lasting}; across the switch at step {step} "
                               f"({label}; step {before['step']} -> {after['step']}, the evaluation nearest switch + "
                               f"{rules.release_window:g} of the run) {dropped}, {tokens}: "
                               f"{'; '.join(reasons)}{ends}", steps + [last["step"]], switch=(step, label),
                               stalled=stalled, phase=phase, **common)
            note = f"the switch at step {step} ({label}) did not release it ({dropped}, {tokens} by step {after['step']})"
        else:
            note = f"whether the switch at step {step} ({label}) released it is undecided, because {unknown}"
    else:
        note = ""
    notes = [note] if note else []
    if not rules.collapsed(final):
        back = next(e["step"] for e in rows if e["step"] > end)
        during = [(s, label) for s, label in switches if start <= s <= back]
        if not during and switch_unknown:
            flags = " / ".join(f"{kind}.switch_step=N" for kind in switch_unknown.split(","))
            schedules = " and ".join(switch_unknown.split(","))
            return Pattern(UNDECIDED, f"undecided, because the run was {lasting} and is above it again from step "
                           f"{back} ({tokens_text(final)} at the end), but it does not state where its {schedules} "
                           f"schedule{'s' if ',' in switch_unknown else ''} switched: with no switch this is a collapse then recovery without a switch; "
                           f"if it switched, give the step (--set {flags}) to tell whether the switch released it",
                           [start, end, back, last["step"]], stalled=stalled, phase=phase, notes=notes, **common)
        if not during:
            return Pattern(RECOVERED, f"collapse then recovery without a switch: {lasting}; above it again from "
                           f"step {back} to the end ({tokens_text(final)}), no switch from its start to the recovery",
                           [start, end, back, last["step"]], stalled=stalled, phase=phase, notes=notes, **common)
        # a switch during the collapse that did not release it within the window: the collapse is what the
        # run showed until then (named below); the later recovery is a note, not a release
        notes.append(f"above {level:g} tokens again from step {back} to the end ({tokens_text(final)}), "
                     f"{back - during[0][0]} steps after the switch at step {during[0][0]} ({during[0][1]}): later "
                     f"than the release window, so not counted as its release")
        steps.append(back)
    lowest = min(e["tokens"] for e in rows if e["step"] >= start)
    if phase == CONTEXTUAL and stalled is False and final > lowest and end == last["step"]:
        return Pattern(TOO_SHORT, f"too short to tell: {lasting}, but mostly in the contextual phase with the loss "
                       f"not rising and the tokens climbing ({lowest:g} -> {final:g}): a slow climb and a plateau "
                       f"look alike this early; run it longer (e.g. twice as long, {2 * last['step']} steps)",
                       steps + [last["step"]], stalled=stalled, phase=phase, notes=notes, **common)
    name = STALL if stalled else PLATEAU if phase == UNIGRAM and stalled is False else FEW_TOKEN_PLATEAU
    what = {STALL: "stalled", PLATEAU: "did not stall", FEW_TOKEN_PLATEAU: "did not stall" if stalled is False
            else "whether it stalled is unknown"}[name]
    return Pattern(name, f"{name}: {lasting}; {what} ({why}); {tokens_text(final)} at the end", steps + [last["step"]],
                   stalled=stalled, phase=phase, notes=notes, **common)
