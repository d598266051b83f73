"""The command: `python -m analysis.tables SWEEP_DIR [SWEEP_DIR...]` prints every table as markdown, each under
the rules behind its classes, and writes each as <name>.md and <name>.csv (plus tables.md, all of them, and the
PNG plots) into --out (default SWEEP_DIR/analysis). Bad input (not a sweep, a step never evaluated) is a
one-line error and exit status 2, before anything is written."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.fmt import step_label, to_markdown
from analysis.load import NotASweep, Sweep, load_sweeps
from analysis.rules import Rules
from analysis.tables import EMPTY, TITLES, BadStep, build_tables, phase_note


def render(sweep: Sweep, tables: dict, params: dict) -> str:
    counts = sweep.points.status.value_counts()
    lines = [f"{len(sweep.points)} grid points: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    for _, p in sweep.unfinished.iterrows():
        where = f" (expected at {p.folder})" if p.folder and p.status == "missing" else ""
        lines.append(f"- {p.point}: {p.status}{where}")
    lines += [f"- {w}" for w in sweep.warnings]
    lines.append(f"Collapse steps: {step_label(params['early'])} and {step_label(params['late'])} ({params['why']}).")
    phase = phase_note(params["rules"])
    lines.append(phase)
    text = "\n".join(lines) + "\n"
    for name, (md, _) in tables.items():
        text += f"\n## {TITLES[name]}\n\n"
        # the phase rule is printed once, above; each table's own .md file repeats it
        notes = [n for n in params["notes"].get(name, []) if n != phase] if len(md) else []
        text += "".join(f"{note}\n\n" for note in notes)
        text += (to_markdown(md) if len(md) else f"Not applicable: {EMPTY.get(name, 'no rows')}.") + "\n"
    return text


def write_outputs(sweep: Sweep, tables: dict, params: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (md, csv) in tables.items():
        notes = "".join(f"{note}\n\n" for note in params["notes"].get(name, [])) if len(md) else ""
        (out / f"{name}.md").write_text(notes + (to_markdown(md) if len(md) else f"Not applicable: {EMPTY.get(name)}.") + "\n")
        csv.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.md", out / f"{name}.csv"]
    (out / "tables.md").write_text(render(sweep, tables, params))
    written.append(out / "tables.md")
    if plots:
        from analysis.plots import save_plots

        written += save_plots(sweep, out, params)
    return written


def parser() -> argparse.ArgumentParser:
    defaults = Rules()
    p = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n")[0])
    p.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="hydra.sweep.dir of a -m run")
    p.add_argument("--steps", nargs="+", type=int, help="steps of the results table (default: a handful of evenly "
                   "spaced evaluated steps)")
    p.add_argument("--collapse-steps", nargs=2, type=int, metavar=("EARLY", "LATE"),
                   help="collapse ratio = tokens(LATE) / tokens(EARLY); also the scaling decision's step (default: "
                        "1000 and 4000 when evaluated, else the evaluations nearest 10%% and 40%% of the run)")
    p.add_argument("--diverse", type=float, default=defaults.diverse, metavar="TOKENS",
                   help="scaling decision: a size stays diverse above this many unique tokens (default %(default)g)")
    p.add_argument("--collapse-level", type=float, default=defaults.collapse_level, metavar="TOKENS",
                   help="collapsed = at most this many unique tokens (default %(default)g)")
    p.add_argument("--near-uniform-share", type=float, default=defaults.near_uniform_share, metavar="SHARE",
                   help="phase: near-uniform when eval loss > H1 + SHARE x (ln V - H1) (default %(default)g)")
    p.add_argument("--contextual-margin", type=float, default=defaults.contextual_margin, metavar="NATS",
                   help="phase: contextual when eval loss < H1 - NATS (default %(default)g)")
    p.add_argument("--min-seeds", type=int, default=defaults.min_seeds, metavar="N",
                   help="flag verdicts decided on fewer seeds per cell (default %(default)d)")
    p.add_argument("--signature-tokens", type=float, default=defaults.signature_tokens, metavar="TOKENS",
                   help="collapse signature: plateau at most this many unique tokens (default %(default)g)")
    p.add_argument("--signature-share", type=float, default=defaults.signature_share, metavar="SHARE",
                   help="collapse signature: the plateau lasts at least this share of stage 1 (default %(default)g)")
    p.add_argument("--stall-nats", type=float, default=defaults.stall_nats, metavar="NATS",
                   help="collapse signature: without a phase, plateau loss within NATS of ln V (default %(default)g)")
    p.add_argument("--release-nats", type=float, default=defaults.release_nats, metavar="NATS",
                   help="collapse signature: loss drop across the switch (default %(default)g)")
    p.add_argument("--pool", action="store_true", help="average points as seeds even when their configs differ "
                   "in more than the seed (listed in the output)")
    p.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/analysis)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def _check_rules(args) -> Rules:
    """Thresholds that make no sense are refused, naming the option, the value and what is allowed."""
    checks = [("--diverse", args.diverse, args.diverse >= 0, "a count >= 0"),
              ("--collapse-level", args.collapse_level, args.collapse_level >= 0, "a count >= 0"),
              ("--near-uniform-share", args.near_uniform_share, 0 < args.near_uniform_share < 1,
               "a share strictly between 0 and 1"),
              ("--contextual-margin", args.contextual_margin, args.contextual_margin >= 0, "nats >= 0"),
              ("--min-seeds", args.min_seeds, args.min_seeds >= 1, "an integer >= 1"),
              ("--signature-tokens", args.signature_tokens, args.signature_tokens >= 0, "a count >= 0"),
              ("--signature-share", args.signature_share, 0 < args.signature_share <= 1, "a share in (0, 1]"),
              ("--stall-nats", args.stall_nats, args.stall_nats >= 0, "nats >= 0"),
              ("--release-nats", args.release_nats, args.release_nats >= 0, "nats >= 0")]
    for option, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{option}={value:g} is not allowed: use {allowed}")
    return Rules(diverse=args.diverse, collapse_level=args.collapse_level, near_uniform_share=args.near_uniform_share,
                 contextual_margin=args.contextual_margin, min_seeds=args.min_seeds,
                 signature_tokens=args.signature_tokens, signature_share=args.signature_share,
                 stall_nats=args.stall_nats, release_nats=args.release_nats)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rules = _check_rules(args)
        sweep = load_sweeps(args.sweep_dirs)
        tables, params = build_tables(sweep, args.steps, tuple(args.collapse_steps) if args.collapse_steps else None,
                                      rules, pool=args.pool)
    except (NotASweep, BadStep, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or Path(args.sweep_dirs[0]) / "analysis"
    written = write_outputs(sweep, tables, params, out, plots=not args.no_plots)
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
