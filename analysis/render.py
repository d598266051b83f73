"""The tables command: `python -m analysis tables SWEEP_DIR [SWEEP_DIR...]` (also `python -m analysis.tables`)
prints every table of the Analysis as markdown, each under the rules behind its classes, and writes each as
<name>.md and <name>.csv (plus tables.md, all of them, and the PNG plots) into --out (default
SWEEP_DIR/analysis). Run folders (metrics.csv + run.json without a sweep, e.g. written by bitnet.probe) and CSV
files from other training code (analysis/foreign.py: --columns, --name-pattern, --set, --label) are read as
points too. Bad input (nothing to analyse, a step never evaluated, a foreign file that cannot be read as asked)
is a one-line error and exit status 2, before anything is written. The markdown helpers here are the report's
too (analysis/document.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.core import Analysis, BadStep
from analysis.fmt import step_label, to_markdown, untrusted
from analysis.foreign import add_foreign_arguments, labelling_from
from analysis.load import NotASweep, Sweep
from analysis.options import add_analysis_options, analysis_of, interrupted, stop_on_sigterm
from analysis.tables import TITLES, phase_note


def status_lines(sweep: Sweep) -> list[str]:
    """The points' statuses, the unfinished points and the loader's warnings (names, statuses and warnings
    quote the run folders: escaped)."""
    counts = sweep.points.status.value_counts()
    lines = [f"{len(sweep.points)} grid points: " + ", ".join(f"{n} {untrusted(s)}" for s, n in counts.items()) + "."]
    for _, p in sweep.unfinished.iterrows():
        where = f" (expected at {untrusted(p.folder)})" if p.folder and p.status == "missing" else ""
        lines.append(f"- {untrusted(p.point)}: {untrusted(p.status)}{where}")
    return lines + [f"- {untrusted(w)}" for w in sweep.warnings]


def rule_lines(a: Analysis) -> list[str]:
    """The collapse steps and the learning-phase rule, printed once above the tables."""
    return [f"Collapse steps: {step_label(a.early)} and {step_label(a.late)} ({a.why}).", phase_note(a.rules)]


def table_markdown(name: str, a: Analysis, level: int = 2, phase_above: bool = True) -> str:
    """One table under its title and its rules. With `phase_above` the phase rule is left out: it is printed
    once, above all the tables (each table's own .md file repeats it)."""
    md = a.tables[name][0]
    phase = phase_note(a.rules)
    notes = [n for n in a.notes.get(name, []) if n != phase or not phase_above] if len(md) else []
    text = f"{'#' * level} {TITLES[name]}\n\n" + "".join(f"{untrusted(note)}\n\n" for note in notes)
    return text + (to_markdown(md) if len(md) else f"Not applicable: {a.empty_reason(name)}.") + "\n"


def render(a: Analysis) -> str:
    text = "\n".join(status_lines(a.sweep) + rule_lines(a)) + "\n"
    return text + "".join(f"\n{table_markdown(name, a)}" for name in a.tables)


# In --out while the outputs are being written: a folder left with it was stopped half-way (Ctrl-C, SIGTERM).
INCOMPLETE = "INCOMPLETE"


def write_outputs(a: Analysis, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE).write_text("The analysis was stopped while writing this folder: its files may be missing "
                                  "or from an earlier run. Run the command again.\n")
    written = []
    for name, (md, csv) in a.tables.items():
        notes = "".join(f"{untrusted(note)}\n\n" for note in a.notes.get(name, [])) if len(md) else ""
        (out / f"{name}.md").write_text(notes + (to_markdown(md) if len(md) else f"Not applicable: {a.empty_reason(name)}.") + "\n")
        csv.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    (out / "tables.md").write_text(render(a))
    written.append(out / "tables.md")
    if plots:
        from analysis.plots import save_plots

        written += save_plots(a, out)
    (out / INCOMPLETE).unlink()
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis tables", description="Tables, verdicts and plots from "
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    first = Path(args.sweep_dirs[0])
    out = args.out or (first.parent if first.is_file() else first) / "analysis"
    try:
        with stop_on_sigterm():
            a = analysis_of(args.sweep_dirs, args, labelling=labelling_from(args))
            written = write_outputs(a, out, plots=not args.no_plots)
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
        print(render(a))
        print(f"wrote {len(written)} files to {out}")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
