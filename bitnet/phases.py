"""The learning phase of one evaluation, from its held-out loss alone: what the model has learned so far.

A language model's held-out cross-entropy starts at ln(V), the loss of the uniform distribution over a
V-token vocabulary, falls to the unigram entropy H1 (the loss of predicting each token's frequency and
ignoring the context), and only goes below H1 once the model uses the context. Where the loss sits on that
scale says which of three phases a row is in:

    near-uniform  eval_loss > H1 + NEAR_UNIFORM_SHARE * (ln V - H1)
                  closer to uniform than to the unigram loss: the model has learned almost nothing yet, so
                  the argmax of its nearly flat predictions can land on a handful of tokens without that
                  meaning anything about the model's capacity
    unigram       between the two: predicts token frequencies; the argmax is then the most frequent tokens
    contextual    eval_loss < H1 - CONTEXTUAL_MARGIN: uses the context (language modelling proper)
    diverging     eval_loss > ln V + DIVERGING_MARGIN, or infinite: worse than a uniform guess, so not
                  "near-uniform" (a model that learned nothing yet) but one that is moving away from it
    unknown       no eval loss (e.g. a CSV with only training loss), or ln V / H1 not known: never guessed

A two-token argmax histogram means very different things in the first and the last phase, which is why the
analysis prints the phase beside every collapse. Dependency-free, so that training code, the analysis and a
library API can all share the one rule.
"""

from __future__ import annotations

import math

NEAR_UNIFORM = "near-uniform"
UNIGRAM = "unigram"
CONTEXTUAL = "contextual"
DIVERGING = "diverging"
UNKNOWN = "unknown"
PHASES = (NEAR_UNIFORM, UNIGRAM, CONTEXTUAL)  # in the order a healthy run goes through them

NEAR_UNIFORM_SHARE = 0.5   # share of the way from H1 up to ln(V) above which a loss counts as near-uniform
CONTEXTUAL_MARGIN = 0.1    # nats below H1 that count as using the context (a unigram predictor cannot go there)
# nats above ln(V) that count as diverging: an untrained model's loss sits just above ln(V) (0.03 nats or less at
# step 0 in every committed run under results/), so 0.1 leaves room for initialisation and no more
DIVERGING_MARGIN = 0.1


def missing(value) -> bool:
    """None or NaN: a value a row or a record does not have (the analysis and the rules share this test)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def present(value) -> bool:
    return not missing(value)


def learning_phase(eval_loss, ln_vocab, unigram_entropy, *, near_uniform_share: float = NEAR_UNIFORM_SHARE,
                   contextual_margin: float = CONTEXTUAL_MARGIN) -> str:
    """"near-uniform", "unigram", "contextual", "diverging" (above ln V + DIVERGING_MARGIN, or infinite), or
    "unknown" when an input it needs is missing (None or NaN)."""
    if missing(eval_loss) or missing(ln_vocab):
        return UNKNOWN
    if math.isinf(eval_loss) or eval_loss > ln_vocab + DIVERGING_MARGIN:
        return DIVERGING
    if missing(unigram_entropy):
        return UNKNOWN
    if eval_loss < unigram_entropy - contextual_margin:
        return CONTEXTUAL
    if eval_loss > unigram_entropy + near_uniform_share * (ln_vocab - unigram_entropy):
        return NEAR_UNIFORM
    return UNIGRAM


def phase_rule(near_uniform_share: float = NEAR_UNIFORM_SHARE, contextual_margin: float = CONTEXTUAL_MARGIN) -> str:
    """The rule in one line, for printing beside the phases it produced."""
    return (f"phase from eval loss L, ln V and the unigram entropy H1: near-uniform if L > H1 + "
            f"{near_uniform_share:g} x (ln V - H1), contextual if L < H1 - {contextual_margin:g} nats, unigram "
            f"between; diverging if L > ln V + {DIVERGING_MARGIN:g} (worse than uniform); unknown without an eval "
            f"loss")
