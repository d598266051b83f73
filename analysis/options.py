"""What the analysis commands share: the options that choose what the tables show and the rules' thresholds
(`python -m analysis tables` and `report`, and a report's generated blocks), turned into an Analysis; and how a
command stopped by Ctrl-C or SIGTERM says what it left behind."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager

from analysis.core import SIZE_KEY, Analysis, analyse
from analysis.foreign import Labelling
from analysis.rules import Rules


def interrupted(err: KeyboardInterrupt, left: str) -> int:
    """One line on what a stopped analysis left behind; the exit status of the signal (130 SIGINT, 143 SIGTERM)."""
    name = "SIGTERM" if str(err) == "SIGTERM" else "SIGINT"
    print(f"interrupted by {name}: {left}; run the same command again", file=sys.stderr)
    return 128 + signal.Signals[name].value


@contextmanager
def stop_on_sigterm():
    """Inside the block SIGTERM ends the analysis like Ctrl-C (KeyboardInterrupt), so that main can say what it
    left behind; a handler someone else installed is left in place."""
    def stop(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# The thresholds of analysis.rules.Rules as options: (Rules field, metavar, help, allowed values, the check).
# The option is the field with dashes (--collapse-level); the default is Rules' own.
COUNT, NATS = ("a count >= 0", lambda v: v >= 0), ("nats >= 0", lambda v: v >= 0)
RULE_OPTIONS = [
    ("diverse", "TOKENS", "scaling decision: a size stays diverse above this many unique tokens", *COUNT),
    ("collapse_level", "TOKENS", "collapsed = at most this many unique tokens", *COUNT),
    ("near_uniform_share", "SHARE", "phase: near-uniform when eval loss > H1 + SHARE x (ln V - H1)",
     "a share strictly between 0 and 1", lambda v: 0 < v < 1),
    ("contextual_margin", "NATS", "phase: contextual when eval loss < H1 - NATS", *NATS),
    ("min_seeds", "N", "flag verdicts decided on fewer seeds per cell", "an integer >= 1", lambda v: v >= 1),
    ("signature_tokens", "TOKENS", "collapse signature: plateau at most this many unique tokens", *COUNT),
    ("signature_share", "SHARE", "collapse signature: the plateau lasts at least this share of stage 1",
     "a share in (0, 1]", lambda v: 0 < v <= 1),
    ("stall_nats", "NATS", "collapse signature: without a phase, plateau loss within NATS of ln V", *NATS),
    ("release_nats", "NATS", "collapse signature: loss drop across the switch", *NATS),
    ("release_window", "SHARE", "collapse signature: judge the release at the evaluation nearest switch + SHARE x "
     "the run's total steps, the loss before it at the last evaluation at or before the switch (0: the first "
     "evaluation after it)", "a share in [0, 1]", lambda v: 0 <= v <= 1),
    ("stall_rise", "NATS", "collapse signature: a plateau whose loss at the switch is NATS above its lowest loss "
     "has stalled, whatever its phase", *NATS),
]


def add_rule_options(p: argparse.ArgumentParser) -> None:
    """The rules' thresholds (RULE_OPTIONS), each an option with its default (also bitnet-diagnose's)."""
    defaults = Rules()
    for field, metavar, text, _, _ in RULE_OPTIONS:
        p.add_argument(f"--{field.replace('_', '-')}", type=int if field == "min_seeds" else float,
                       default=getattr(defaults, field), metavar=metavar, help=f"{text} (default %(default)g)")


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """The options that choose what the tables show and the rules' thresholds (shared with analysis.document)."""
    p.add_argument("--steps", nargs="+", type=int, help="steps of the results table (default: a handful of evenly "
                   "spaced evaluated steps)")
    p.add_argument("--collapse-steps", nargs=2, type=int, metavar=("EARLY", "LATE"),
                   help="collapse ratio = tokens(LATE) / tokens(EARLY); also the scaling decision's step (default: "
                        "1000 and 4000 when evaluated, else the evaluations nearest 10%% and 40%% of the run)")
    add_rule_options(p)
    p.add_argument("--size-key", default=SIZE_KEY, metavar="KEY", help="the swept key whose values are model "
                   "sizes: the scaling decision compares them, the collapse-ratio plot puts them on its x axis "
                   "(default %(default)s)")
    p.add_argument("--pool", action="store_true", help="average points as seeds even when their configs differ "
                   "in more than the seed (listed in the output)")


def check_rules(args) -> Rules:
    """Thresholds that make no sense are refused, naming the option, the value and what is allowed."""
    for field, _, _, allowed, ok in RULE_OPTIONS:
        value = getattr(args, field)
        if not ok(value):
            raise ValueError(f"--{field.replace('_', '-')}={value:g} is not allowed: use {allowed}")
    return Rules(**{field: getattr(args, field) for field, *_ in RULE_OPTIONS})


def analysis_of(paths, args, labelling: Labelling | None = None) -> Analysis:
    """The Analysis of `paths` (read as one sweep) with the options of add_analysis_options. Raises NotASweep,
    BadStep or ValueError (a one-line message) for bad input."""
    return analyse(paths, args.steps, tuple(args.collapse_steps) if args.collapse_steps else None,
                   check_rules(args), pool=args.pool, size_key=args.size_key, labelling=labelling)
