"""The command: `python -m analysis.tables SWEEP_DIR [SWEEP_DIR...]` prints every table as markdown, each under
the rules behind its classes, and writes each as <name>.md and <name>.csv (plus tables.md, all of them, and the
PNG plots) into --out (default SWEEP_DIR/analysis). Run folders (metrics.csv + run.json without a sweep, e.g.
written by bitnet.probe) and CSV files from other training code (analysis/foreign.py: --columns, --name-pattern,
--set, --label) are read as points too. Bad input (nothing to analyse, a step never evaluated, a foreign file
that cannot be read as asked) is a one-line error and exit status 2, before anything is written."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from analysis.fmt import step_label, to_markdown, untrusted
from analysis.foreign import add_foreign_arguments, labelling_from
from analysis.load import NotASweep, Sweep, load_sweeps
from analysis.rules import Rules
from analysis.tables import TITLES, BadStep, build_tables, empty_reason, phase_note


def status_lines(sweep: Sweep) -> list[str]:
    """The points' statuses, the unfinished points and the loader's warnings (names, statuses and warnings
    quote the run folders: escaped)."""
    counts = sweep.points.status.value_counts()
    lines = [f"{len(sweep.points)} grid points: " + ", ".join(f"{n} {untrusted(s)}" for s, n in counts.items()) + "."]
    for _, p in sweep.unfinished.iterrows():
        where = f" (expected at {untrusted(p.folder)})" if p.folder and p.status == "missing" else ""
        lines.append(f"- {untrusted(p.point)}: {untrusted(p.status)}{where}")
    return lines + [f"- {untrusted(w)}" for w in sweep.warnings]


def rule_lines(params: dict) -> list[str]:
    """The collapse steps and the learning-phase rule, printed once above the tables."""
    return [f"Collapse steps: {step_label(params['early'])} and {step_label(params['late'])} ({params['why']}).",
            phase_note(params["rules"])]


def table_markdown(name: str, tables: dict, params: dict, level: int = 2, phase_above: bool = True) -> str:
    """One table under its title and its rules. With `phase_above` the phase rule is left out: it is printed
    once, above all the tables (each table's own .md file repeats it)."""
    md = tables[name][0]
    phase = phase_note(params["rules"])
    notes = [n for n in params["notes"].get(name, []) if n != phase or not phase_above] if len(md) else []
    text = f"{'#' * level} {TITLES[name]}\n\n" + "".join(f"{untrusted(note)}\n\n" for note in notes)
    return text + (to_markdown(md) if len(md) else f"Not applicable: {empty_reason(name, params)}.") + "\n"


def render(sweep: Sweep, tables: dict, params: dict) -> str:
    text = "\n".join(status_lines(sweep) + rule_lines(params)) + "\n"
    return text + "".join(f"\n{table_markdown(name, tables, params)}" for name in tables)


# In --out while the outputs are being written: a folder left with it was stopped half-way (Ctrl-C, SIGTERM).
INCOMPLETE = "INCOMPLETE"


def write_outputs(sweep: Sweep, tables: dict, params: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE).write_text("The analysis was stopped while writing this folder: its files may be missing "
                                  "or from an earlier run. Run the command again.\n")
    written = []
    for name, (md, csv) in tables.items():
        notes = "".join(f"{untrusted(note)}\n\n" for note in params["notes"].get(name, [])) if len(md) else ""
        (out / f"{name}.md").write_text(notes + (to_markdown(md) if len(md) else f"Not applicable: {empty_reason(name, params)}.") + "\n")
        csv.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    (out / "tables.md").write_text(render(sweep, tables, params))
    written.append(out / "tables.md")
    if plots:
        from analysis.plots import save_plots

        written += save_plots(sweep, out, params)
    (out / INCOMPLETE).unlink()
    return written


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


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """The options that choose what the tables show and the rules' thresholds (shared with analysis.document)."""
    defaults = Rules()
    p.add_argument("--steps", nargs="+", type=int, help="steps of the results table (default: a handful of evenly "
                   "spaced evaluated steps)")
    p.add_argument("--collapse-steps", nargs=2, type=int, metavar=("EARLY", "LATE"),
                   help="collapse ratio = tokens(LATE) / tokens(EARLY); also the scaling decision's step (default: "
                        "1000 and 4000 when evaluated, else the evaluations nearest 10%% and 40%% of the run)")
    for field, metavar, text, _, _ in RULE_OPTIONS:
        default = getattr(defaults, field)
        p.add_argument(f"--{field.replace('_', '-')}", type=int if field == "min_seeds" else float, default=default, metavar=metavar,
                       help=f"{text} (default %(default)g)")
    p.add_argument("--pool", action="store_true", help="average points as seeds even when their configs differ "
                   "in more than the seed (listed in the output)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.tables", description="Tables, verdicts and plots from "
                                "sweep folders; every verdict is printed under its rule.")
    p.add_argument("sweep_dirs", nargs="+", metavar="PATH", help="a sweep folder (the hydra.sweep.dir of a -m run), "
                   "a run folder (metrics.csv, e.g. written by bitnet.probe), or CSV files from other training code "
                   "(or folders of them)")
    add_analysis_options(p)
    p.add_argument("--out", type=Path, help="output folder (default: analysis/ in the first PATH, or beside it "
                   "when it is a file)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    add_foreign_arguments(p)
    return p


def _check_rules(args) -> Rules:
    """Thresholds that make no sense are refused, naming the option, the value and what is allowed."""
    for field, _, _, allowed, ok in RULE_OPTIONS:
        value = getattr(args, field)
        if not ok(value):
            raise ValueError(f"--{field.replace('_', '-')}={value:g} is not allowed: use {allowed}")
    return Rules(**{field: getattr(args, field) for field, *_ in RULE_OPTIONS})


def analyse(sweep_dirs, args, labelling=None) -> tuple[Sweep, dict, dict]:
    """Load the paths (as one sweep; `labelling`: how foreign CSV files are read) and build its tables with the
    options of add_analysis_options. Raises NotASweep, BadStep or ValueError (a one-line message) for bad input."""
    rules = _check_rules(args)
    sweep = load_sweeps(sweep_dirs, labelling=labelling)
    tables, params = build_tables(sweep, args.steps, tuple(args.collapse_steps) if args.collapse_steps else None,
                                  rules, pool=args.pool)
    return sweep, tables, params


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    first = Path(args.sweep_dirs[0])
    out = args.out or (first.parent if first.is_file() else first) / "analysis"
    try:
        with stop_on_sigterm():
            sweep, tables, params = analyse(args.sweep_dirs, args, labelling=labelling_from(args))
            written = write_outputs(sweep, tables, params, out, plots=not args.no_plots)
    except (NotASweep, BadStep, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, PermissionError, IsADirectoryError) as err:
        print(f"error: --out {out}: cannot write there ({err.strerror}: {err.filename})", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM through stop_on_sigterm
        return interrupted(err, f"{out} is incomplete (its {INCOMPLETE} file says so)" if (out / INCOMPLETE).exists()
                           else "nothing was written")
    try:  # files first: `... | head` closes the pipe early, and what was asked for is already written
        print(render(sweep, tables, params))
        print(f"wrote {len(written)} files to {out}")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
