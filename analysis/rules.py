"""Every class and verdict the analysis prints, with its thresholds: the bottom layer (no pandas frames, no
files). Each rule takes plain numbers and returns a label; `Rules` holds the thresholds a user may override
(`python -m analysis.tables --help`), and every rule has a one-line description printed beside its results.

Token-count classes and collapse-ratio bands are the seeds' (a small ternary LM's unique next-token predictions
over held-out positions); the learning phase is bitnet.phases'; the rest is documented in analysis/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.release import signature_numbers
from bitnet.phases import (CONTEXTUAL, CONTEXTUAL_MARGIN, DIVERGING_MARGIN, NEAR_UNIFORM_SHARE, UNKNOWN, learning_phase,
                           phase_rule, present)

# Collapse ratio = tokens(LATE) / tokens(EARLY): the seeds' bands, plus "rising" above 1 (tokens grew: a
# recovery is not stability).
RATIO_CLASSES = [(0.2, "strong collapse"), (0.5, "moderate collapse"), (0.8, "minimal collapse"), (1.0, "stable"),
                 (math.inf, "rising")]
# Unique-token counts: upper bound (inclusive), interpretation, status.
TOKEN_CLASSES = [(5, "complete collapse", "❌ Failed"), (10, "severe collapse", "❌ Failed"),
                 (30, "partial collapse", "⚠️ Marginal"), (100, "questionable", "⚠️ Marginal"),
                 (500, "acceptable", "✅ Working"), (math.inf, "very good", "✅ Working")]

DIVERSE = 100         # tokens: "stays diverse" above this (the first seed note's ">100"; the other one says 50)
COLLAPSE_LEVEL = 10   # tokens: collapsed at or below this (the end of the "complete" and "severe collapse" classes)
MIN_SEEDS = 3         # a verdict on fewer seeds per cell is flagged
# The collapse signature of the investigation's runs (see `signature_parts`).
SIGNATURE_TOKENS = 5     # tokens: "about 2", the complete-collapse class
SIGNATURE_SHARE = 0.2    # the plateau lasts at least this share of stage 1 (the steps before the first switch)
STALL_NATS = 1.0         # nats: on the plateau the loss stays within this of ln V (or of the run's first loss)
RELEASE_NATS = 1.0       # nats: the loss drops at least this much across the switch...
RELEASE_FACTOR = 2.0     # ...while unique tokens at least double...
RELEASE_WINDOW = 0.1     # ...from the switch to a tenth of the run later (the seeds' step 5k -> 6k of 10k)
STALL_RISE = 0.1         # nats: a plateau whose loss rises this much by the switch has stalled, in any phase

# The collapse diagnostics' verdict thresholds (see `verdict`).
UNIGRAM_GAP = 0.1     # nats: |eval loss - unigram entropy| below this is "at the unigram loss"
FEW_TOKENS = 30       # the collapse classes (complete, severe, partial collapse) end at 30 tokens
COSINE_HIGH = 0.9     # mean cosine of final hidden states across positions
CHURN_FACTOR = 2.0    # flip rate above this many times the point's own median flip rate
REPEAT_HIGH = 0.5     # share of greedy trigrams already seen earlier in the same continuation

# Runs too short to judge (see `too_short`): the steps after warm-up that the unigram phase usually lasts. The
# faithful default recipe (the committed 64-wide runs under results/: forensics_study suspect=faithful and
# default_model_1000 optim=adamw, warm-up 50) reaches the contextual phase by step 100-125, i.e. within 75 steps of
# its warm-up; 300 allows four times that. A run still in the unigram phase after it is reported as a stall
# (the trajectory table's plateau), not hidden as too short: slower recipes (coupled L2) take up to 400.
UNIGRAM_SPAN = 300


@dataclass(frozen=True)
class Rules:
    """The thresholds in force; every field is a command-line option of `python -m analysis.tables`."""
    diverse: float = DIVERSE
    collapse_level: float = COLLAPSE_LEVEL
    near_uniform_share: float = NEAR_UNIFORM_SHARE
    contextual_margin: float = CONTEXTUAL_MARGIN
    min_seeds: int = MIN_SEEDS
    signature_tokens: float = SIGNATURE_TOKENS
    signature_share: float = SIGNATURE_SHARE
    stall_nats: float = STALL_NATS
    release_nats: float = RELEASE_NATS
    release_window: float = RELEASE_WINDOW
    stall_rise: float = STALL_RISE

    def phase(self, eval_loss, ln_vocab, unigram_entropy) -> str:
        return learning_phase(eval_loss, ln_vocab, unigram_entropy, near_uniform_share=self.near_uniform_share,
                              contextual_margin=self.contextual_margin)

    def phase_rule(self) -> str:
        return phase_rule(self.near_uniform_share, self.contextual_margin)

    def collapsed(self, tokens) -> bool:
        return present(tokens) and round(tokens) <= self.collapse_level



# ---- runs that cannot be judged ---------------------------------------------------------------------------
def too_short_rule() -> str:
    return (f"too short to tell = the run stops within its LR warm-up, or before warm-up + {UNIGRAM_SPAN} steps "
            f"without reaching the contextual phase ({UNIGRAM_SPAN} = four times the unigram phase's span in the "
            f"faithful default recipe, which leaves it within 75 steps of its warm-up); such a run gets no class, "
            f"trajectory or verdict")


def too_short(last_step, warmup, final_phase: str) -> str:
    """"too short to tell: N steps, needs about M" for a run whose last evaluation (`last_step`, its phase
    `final_phase`) is within its warm-up, or before the unigram phase's usual span without having left the
    unigram phase; "" when it can be judged."""
    if not present(last_step):
        return ""
    warmup = int(warmup) if present(warmup) else 0
    needs = warmup + UNIGRAM_SPAN
    if last_step <= warmup or (last_step < needs and final_phase != CONTEXTUAL):
        return f"too short to tell: {int(last_step)} steps, needs about {needs}"
    return ""


def diverged_rule() -> str:
    return (f"diverged = recorded as diverged, or a training or eval loss that is NaN/infinite or above ln V + "
            f"{DIVERGING_MARGIN:g} after step 0: listed apart, never classed")


def diverged(status: str, error, losses: list[tuple[int, str, float]], ln_vocab) -> str:
    """Why a run cannot be judged because its loss blew up, or "": its run.json status is diverged, or a loss
    [(step, column, value)] after step 0 is infinite or above ln V + DIVERGING_MARGIN (worse than a uniform guess)."""
    if status == "diverged":
        return f"diverged ({error})" if error else "diverged"
    for step, column, loss in losses:
        if step > 0 and present(loss) and (math.isinf(loss) or (present(ln_vocab) and loss > ln_vocab + DIVERGING_MARGIN)):
            return (f"diverged: {column.replace('_', ' ')} {loss:.2f} at step {step}" + ("" if math.isinf(loss) else
                    f", above ln V = {ln_vocab:.2f}"))
    return ""


# ---- classes of one number --------------------------------------------------------------------------------
def ratio_class(ratio) -> str:
    """<0.2 strong, [0.2, 0.5) moderate, [0.5, 0.8] minimal collapse (0.80 -> minimal), (0.8, 1] stable,
    >1 rising."""
    if not present(ratio):
        return "–"
    for bound, name in RATIO_CLASSES:
        if ratio < bound or (bound in (0.8, 1.0) and ratio == bound):
            return name
    return RATIO_CLASSES[-1][1]


def token_class(tokens) -> tuple[str, str]:
    """(interpretation, status) of a unique-token count; a mean over seeds is rounded first."""
    if not present(tokens):
        return "–", "–"
    tokens = round(tokens)
    for bound, name, status in TOKEN_CLASSES:
        if tokens <= bound:
            return name, status
    return TOKEN_CLASSES[-1][1:]


def token_class_rank(tokens) -> int:
    tokens = round(tokens)
    return next(i for i, (bound, _, _) in enumerate(TOKEN_CLASSES) if tokens <= bound)


def unreachable_classes(positions) -> list[str]:
    """The token classes that need more distinct predictions than `positions` evaluated positions allow."""
    if not present(positions):
        return []
    lower = [0] + [bound for bound, _, _ in TOKEN_CLASSES[:-1]]  # a class starts above the previous bound
    return [name for low, (_, name, _) in zip(lower, TOKEN_CLASSES) if low + 1 > positions]


def label_summary(labels: list[str]) -> str:
    """One cell's labels over seeds: `x` when they agree, `x 2/3, y 1/3` when not; empty labels are skipped."""
    labels = [label for label in labels if label]
    if not labels:
        return "–"
    if len(set(labels)) == 1:
        return labels[0]
    return ", ".join(f"{label} {labels.count(label)}/{len(labels)}" for label in dict.fromkeys(labels))


def phases_summary(phases: list[str]) -> str:
    """label_summary of learning phases, with "phase unknown" written out (never a bare "unknown")."""
    return label_summary(["phase unknown" if p == UNKNOWN else p for p in phases if p])


# ---- one point's trajectory ---------------------------------------------------------------------------------
NEVER = "never collapsed"
STAYED = "collapsed and stayed"
RECOVERED = "collapsed and recovered"
AFTER_SWITCH = "recovered only after a switch"


def trajectory_rule(rules: Rules) -> str:
    return (f"collapsed = at most {rules.collapse_level:g} unique tokens; recovered = above it again at a later "
            f"evaluation and at the last one; \"{AFTER_SWITCH}\" when it first climbs above it after the "
            f"LR/WD switch; an unfinished point's class ends in \"(so far)\"")


def trajectory_class(tokens_by_step: list[tuple[int, float]], rules: Rules, switch_step=None,
                     finished: bool = True) -> str:
    """never collapsed / collapsed and stayed / collapsed and recovered / recovered only after a switch, from
    the evaluations [(step, unique tokens)] in step order; "" with no evaluation."""
    curve = [(s, t) for s, t in tokens_by_step if present(t)]
    if not curve:
        return ""
    suffix = "" if finished else " (so far)"
    first = next((i for i, (_, t) in enumerate(curve) if rules.collapsed(t)), None)
    if first is None:
        return NEVER + suffix
    if rules.collapsed(curve[-1][1]):
        return STAYED + suffix
    climbed = next(s for s, t in curve[first:] if not rules.collapsed(t))
    if switch_step is not None and climbed > switch_step and curve[first][0] <= switch_step:
        return AFTER_SWITCH + suffix
    return RECOVERED + suffix


def longest_stall(tokens_by_step: list[tuple[int, float]], rules: Rules) -> tuple[int, int] | None:
    """(first step, last step) of the longest stretch of consecutive evaluations at or below the collapse level
    (two or more evaluations; the earliest on ties), whether or not a switch ends it; None without one."""
    best, start = None, None
    for step, tokens in [(s, t) for s, t in tokens_by_step if present(t)]:
        if rules.collapsed(tokens):
            start = step if start is None else start
            if start != step and (best is None or step - start > best[1] - best[0]):
                best = (start, step)
        else:
            start = None
    return best


# ---- the investigation's collapse signature ---------------------------------------------------------------
def signature_rule(rules: Rules) -> str:
    return (f"plateau = at most {rules.signature_tokens:g} unique tokens at every evaluation from its start to the "
            f"switch (or the end of a run without one), lasting at least {rules.signature_share:g} of stage 1; "
            f"stalled = on the plateau every row is near-uniform (learning phase) or, without a phase, its loss is "
            f"within {rules.stall_nats:g} nats of ln V (or of the run's first loss, taken before the plateau), or "
            f"the loss rises on the plateau: at the switch at least {rules.stall_rise:g} nats above the plateau's "
            f"lowest loss; release = from the last evaluation at or before the switch to the evaluation nearest "
            f"switch + {rules.release_window:g} of the run's total steps (a run evaluated no later than that: "
            f"unknown) the loss drops at least {rules.release_nats:g} nats and tokens at least "
            f"x{RELEASE_FACTOR:g}. yes: plateau, no part contradicts it, and stalled or release shown; no: no "
            f"plateau, or the loss is shown to fall out of the near-uniform range on it without rising; partial: "
            f"the rest")


def near_uniform_by_loss(plateau: list[dict], before: list[dict], ln_vocab,
                         rules: Rules) -> tuple[bool | None, float | None, str]:
    """For evaluations without a learning phase: (near, reference, what it is) where near says whether every loss
    on the plateau stays within `stall_nats` of ln V, or, ln V unknown, of the run's first loss (among the
    evaluations `before` the plateau); near is None when there is nothing to compare."""
    first = [e["loss"] for e in before if present(e.get("loss"))]
    reference, what = (ln_vocab, "ln V") if present(ln_vocab) else (first[0], "the run's first loss") if first \
        else (None, "")
    losses = [e["loss"] for e in plateau if present(e.get("loss"))]
    if reference is None or not losses:
        return None, reference, what
    return all(reference - loss <= rules.stall_nats for loss in losses), reference, what


def signature_parts(evaluations: list[dict], rules: Rules, switch_step=None, ln_vocab=None, total_steps=None) -> dict:
    """evaluations: [{step, tokens, loss, phase}] in step order (loss: eval loss when the run has one, else the
    training loss; NaN where absent); total_steps: the run's planned length (sets the release window; default
    the last evaluated step). Returns {plateau, stalled, release}: each "yes" / "no" / "unknown", with
    {plateau_start, plateau_share, stalled_text, release_text} and the numbers of analysis.release."""
    numbers = signature_numbers(evaluations, switch_step, total_steps, plateau_tokens=rules.signature_tokens,
                                window_share=rules.release_window)
    rows = [e for e in evaluations if present(e.get("tokens"))]
    # the plateau's start and share are the signature's only when it lasts (a short stretch keeps its numbers in
    # plateau_steps / plateau_fraction, not in the "lasting plateau" column)
    out = {**numbers, "plateau": "no", "stalled": "unknown", "release": "unknown", "plateau_start": None,
           "plateau_share": None, "stalled_text": "", "release_text": ""}
    if not rows:
        out["plateau"] = "unknown"
        return out
    start, share = numbers["plateau_start"], numbers["plateau_fraction"]
    if start is not None and share >= rules.signature_share:
        out.update(plateau="yes", plateau_start=start, plateau_share=share)
        plateau = [e for e in rows if start <= e["step"] <= (switch_step if switch_step is not None else math.inf)]
        phases = [e.get("phase") for e in plateau if e.get("phase") not in (None, "", "unknown")]
        near = None  # is the plateau's loss near uniform?
        if phases:
            near = all(p == "near-uniform" for p in phases)
        else:
            near, _, _ = near_uniform_by_loss(plateau, [e for e in rows if e["step"] < start], ln_vocab, rules)
        rising = present(numbers["plateau_rise"]) and numbers["plateau_rise"] >= rules.stall_rise
        if near or rising:
            out["stalled"] = "yes"
        elif near is False:
            out["stalled"] = "no"
        if present(numbers["plateau_rise"]):
            out["stalled_text"] = f"{'near-uniform; ' if near else ''}loss {numbers['plateau_rise']:+.2f} nats on it"
    if switch_step is not None:
        if numbers["release_why"]:
            out["release_text"] = f"undecided, because {numbers['release_why']}"
        else:
            drop, before, after = numbers["release_drop"], numbers["tokens_before"], numbers["tokens_after"]
            out["release"] = "yes" if drop >= rules.release_nats and after / max(before, 1) >= RELEASE_FACTOR else "no"
            out["release_text"] = (f"loss {-drop:+.2f} nats, tokens {before:g} → {after:g}, step "
                                   f"{numbers['before_step']} → {numbers['after_step']}")
    return out


def signature_verdict(parts: dict) -> str:
    if parts["plateau"] != "yes" or parts["stalled"] == "no":
        return "no"
    if "no" not in (parts["stalled"], parts["release"]) and "yes" in (parts["stalled"], parts["release"]):
        return "yes"
    return "partial"


def counted(labels: list[str]) -> str:
    """`yes 2/3, partial 1/3`: every label with its count, even when the seeds agree."""
    labels = [label for label in labels if label]
    if not labels:
        return "–"
    return ", ".join(f"{label} {labels.count(label)}/{len(labels)}" for label in dict.fromkeys(labels))


# ---- the scaling decision -----------------------------------------------------------------------------------
def scaling_rule(rules: Rules, size_key: str = "hidden") -> str:
    return (f"at the late step, per {size_key} size (mean over seeds): diverse = more than {rules.diverse:g} tokens, "
            f"collapsed = at most {rules.collapse_level:g}. A: sizes from X up diverse, every smaller size "
            f"collapsed; B: none diverse and tokens do not rise with size; C: non-monotonic (a larger size in a "
            f"lower token class), gradual (diverse sizes above an in-between one) or plateau (tokens rise with "
            f"size, none diverse); decided only when every size has a value at that step")


def band(tokens, rules: Rules) -> str:
    """What the scaling decision reads off one seed: collapsed, diverse or in between."""
    return "collapsed" if rules.collapsed(tokens) else f"diverse (>{rules.diverse:g})" if tokens > rules.diverse \
        else "in between"


def undecided_because(groups: list[dict], key: str) -> str:
    """"undecided: waiting for 768 (failed); 256 (too short to tell: ...)" from the groups' `waiting` statuses
    and `short` reasons (runs too short to judge), or "" when every group can be judged."""
    waiting = [f"{_num(g[key])} ({', '.join(g['waiting'])})" for g in groups if g["waiting"]]
    short = [f"{_num(g[key])} ({', '.join(dict.fromkeys(g['short']))})" for g in groups if g.get("short")]
    parts = ([f"waiting for {', '.join(waiting)}"] if waiting else []) + short
    return f"undecided: {'; '.join(parts)}" if parts else ""


def decide_scaling(sizes: list[dict], rules: Rules, varied=("lr",), size_key: str = "hidden") -> dict:
    """sizes: [{<size_key>: the size, tokens (mean over seeds, NaN when no point has it), seeds (n with a
    value), waiting (["failed", "running"...] of the size's points without a value), short (too-short reasons,
    optional), values (each seed's tokens, optional)}] in size order; `varied`: the sweep's keys, since advice
    about the LR comes only from a sweep that varies it. Seeds of one size in different bands (`band`) leave it
    undecided: a class is never read off their mean. Returns {outcome, pattern, meaning, flags}."""
    unjudged = undecided_because(sizes, size_key)
    if unjudged:
        return {"outcome": "undecided", "pattern": "–", "flags": "", "meaning": unjudged}
    split = [s for s in sizes if len({band(t, rules) for t in s.get("values", [])}) > 1]
    if split:
        return {"outcome": "undecided", "pattern": "–", "flags": "", "meaning": "undecided: seeds disagree at " + "; ".join(
            f"{_num(s[size_key])} ({', '.join(_num(t) for t in s['values'])} tokens: "
            f"{counted([band(t, rules) for t in s['values']])})" for s in split)}
    if len(sizes) < 2:
        return {"outcome": "undecided", "pattern": "–", "flags": "",
                "meaning": f"undecided: needs two or more {size_key} sizes"}
    values = [s[size_key] for s in sizes]
    tokens = [s["tokens"] for s in sizes]
    flags = []
    if min(s["seeds"] for s in sizes) < rules.min_seeds:
        flags.append(f"decided on fewer than {rules.min_seeds} seeds per size")
    ranks = [token_class_rank(t) for t in tokens]
    diverse = [t > rules.diverse for t in tokens]
    if diverse[0]:
        flags.insert(0, "smallest size already diverse")
    if any(later < earlier for i, earlier in enumerate(ranks) for later in ranks[i + 1:]):
        worse = next(h for i, h in enumerate(values) if any(ranks[i] < r for r in ranks[:i]))
        flags.insert(0, "non-monotonic")
        return {"outcome": "C", "pattern": "non-monotonic", "flags": "; ".join(flags),
                "meaning": f"mixed: {size_key} {_num(worse)} falls into a lower token class than a smaller size; "
                           f"check the runs, then investigate"}
    if all(diverse):
        return {"outcome": "–", "pattern": "no collapse at any size", "flags": "; ".join(flags),
                "meaning": "every size stays diverse: this grid cannot show a size threshold (try smaller sizes "
                           "or a longer run)"}
    rising = all(b > a for a, b in zip(tokens, tokens[1:]))
    if any(diverse):
        x = values[diverse.index(True)]
        below = [t for h, t in zip(values, tokens) if h < x]
        if all(rules.collapsed(t) for t in below):
            return {"outcome": "A", "pattern": f"monotonic, threshold at {_num(x)}", "flags": "; ".join(flags),
                    "meaning": f"scaling fixes it: {size_key} ≥ {_num(x)} stays diverse, every smaller size "
                               f"collapses"}
        return {"outcome": "C", "pattern": "gradual", "flags": "; ".join(flags),
                "meaning": f"mixed: tokens rise with size without a sharp threshold ({size_key} ≥ {_num(x)} diverse, "
                           f"smaller sizes in between){_advice(varied, 'combine a larger model with a reduced LR')}"}
    if rising:
        return {"outcome": "C", "pattern": "plateau" if rules.collapsed(tokens[-1]) else "gradual, none diverse",
                "flags": "; ".join(flags),
                "meaning": f"mixed: tokens rise with size but no size stays above {rules.diverse:g}; size alone is "
                           f"not enough{_advice(varied, 'adjust the LR')}"}
    return {"outcome": "B", "pattern": "flat", "flags": "; ".join(flags),
            "meaning": f"no threshold: no size stays above {rules.diverse:g} tokens and tokens do not rise with "
                       f"size; scaling alone does not fix it{_advice(varied, 'adjust the LR')}"}


def _advice(varied, advice: str) -> str:
    """The LR advice, only when the sweep varied the LR (a sweep over size alone cannot tell what it would do)."""
    if any(k == "lr" or k.startswith("lr.") for k in varied):
        return f"; {advice} (the LR is varied here: compare its values' rows)"
    return "; this sweep does not vary the LR, so it cannot say whether another LR would help"


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


# ---- interventions ------------------------------------------------------------------------------------------
def intervention_summary(arms: list[dict], rules: Rules) -> str:
    """arms: [{arm, final_tokens (one per judged seed), waiting, short (too-short reasons), diverged (count of
    diverged seeds)}] in declared order. One line naming the arms that end collapsed (every seed at most the
    collapse level at its last evaluation), those that do not, and apart, the seeds that diverged."""
    unjudged = undecided_because(arms, "arm")
    if unjudged:
        return unjudged
    diverged = [f"{a['arm']} ({a['diverged']}/{a['diverged'] + len(a['final_tokens'])} seeds)" for a in arms
                if a.get("diverged")]
    arms = [a for a in arms if a["final_tokens"]]  # an arm whose every seed diverged is only listed as such
    ends = [a["arm"] for a in arms if all(rules.collapsed(t) for t in a["final_tokens"])]
    avoids = [a["arm"] for a in arms if not any(rules.collapsed(t) for t in a["final_tokens"])]
    mixed = [a["arm"] for a in arms if a["arm"] not in ends + avoids]
    rule = (f"(ends collapsed = at most {rules.collapse_level:g} unique tokens at the last evaluation"
            + ("; diverged seeds are listed apart, not judged)" if diverged else ")"))
    if diverged and not arms:
        return f"every seed diverged: {', '.join(diverged)} {rule}"
    if not avoids and not mixed:
        return (f"every arm ends collapsed: {', '.join(ends)}" + (f"; diverged: {', '.join(diverged)}" if diverged
                                                                 else "") + f" {rule}")
    parts = [f"{'only ' if len(avoids) == 1 and ends else ''}{', '.join(avoids)} "
             f"{'avoids' if len(avoids) == 1 else 'avoid'} ending collapsed" if avoids else "",
             f"{', '.join(ends)} {'ends' if len(ends) == 1 else 'end'} collapsed" if ends else "",
             f"{', '.join(mixed)}: seeds disagree" if mixed else "",
             f"diverged: {', '.join(diverged)}" if diverged else ""]
    text = "; ".join(p for p in parts if p)
    # arm names are data ("adamw"): only the sentence's own first word is capitalised
    return (f"O{text[1:]}" if text.startswith("only ") else text) + f" {rule}"


# ---- the collapse diagnostics' verdict ----------------------------------------------------------------------
def verdict(values: dict, flip_median: float | None = None) -> list[str]:
    """What one evaluation row's diagnostics say, as short tags; a rule whose inputs are empty is skipped.

      unigram phase            |loss_gap| < UNIGRAM_GAP (0.1 nats) and unique tokens <= FEW_TOKENS (30)
      representation collapse  hidden_cosine > COSINE_HIGH (0.9)
      weights churning         flip_rate > CHURN_FACTOR (2) x flip_median, the point's median flip rate
      greedy output loops      greedy_repeat3 >= REPEAT_HIGH (0.5)

    With none of them: "few tokens, no diagnostic signal" at <= 30 unique tokens, else "no collapse signal";
    no unique-token count at all gives []."""
    tokens = values.get("unique_tokens")
    if not present(tokens):
        return []
    tags = []
    gap, cosine = values.get("loss_gap"), values.get("hidden_cosine")
    flip, repeat = values.get("flip_rate"), values.get("greedy_repeat3")
    if present(gap) and abs(gap) < UNIGRAM_GAP and tokens <= FEW_TOKENS:
        tags.append("unigram phase")
    if present(cosine) and cosine > COSINE_HIGH:
        tags.append("representation collapse")
    if present(flip) and present(flip_median) and flip > CHURN_FACTOR * flip_median:
        tags.append("weights churning")
    if present(repeat) and repeat >= REPEAT_HIGH:
        tags.append("greedy output loops")
    if not tags:
        tags.append("few tokens, no diagnostic signal" if tokens <= FEW_TOKENS else "no collapse signal")
    return tags
