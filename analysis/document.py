"""The report command: sweep folders -> one self-contained markdown report, its plots as PNGs beside it.

    python -m analysis report SWEEP [SWEEP ...] [--out DIR] [--title TITLE] [the options of the tables command]
    python -m analysis report --update DOC.md          # refresh the generated blocks of a hand-written document
    ... --check                                        # write nothing; exit 1 when the file on disk is stale

Each SWEEP is one section: what was run (the grid from grid.json, the settings from run.json), the points and
their status, the verdicts (collapse signature per cell with k/n seeds, interventions summary, scaling
decision), the plots and every table under its rule. Folders joined by commas (`a,b`) are one section, read
as one sweep (as `python -m analysis tables a b` reads them). The report is DIR/report.md (DIR defaults to the
first SWEEP's analysis/ folder) and its plots DIR/report_figures/<sweep>-<plot>.png, linked relatively. A
section renders one Analysis (analysis/core.py); its plots are copied from the tables command's PNGs when that
command already drew them from the same data and options (analysis.plots.drawn_plots), else drawn. `python -m
analysis.document` is the same command.

Nothing in the output depends on when or where it was made: no timestamps, every path relative to the report,
stable order, PNGs without a version stamp. A report made from committed folders can be committed and checked.

A generated block of a hand-written document (DOC.md) is

    <!-- generated: ../results/forensics --collapse-steps 1000 4000 -->
    (replaced by --update)
    <!-- end generated -->

Its arguments are a report's: SWEEP folders relative to the document's folder, the analysis options, and
`--only PART ...` (setup, points, verdicts, plots, tables or a table name: only those parts, under headings at
`--level`, default 2; without --only, each SWEEP is a section headed at that level). Its plots go to
DOC_figures/ beside the document.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis.core import Analysis, BadStep
from analysis.fmt import fmt_value, step_label, to_markdown, untrusted
from analysis.load import GRID_MANIFEST, NotASweep, Sweep, find_point_folders, parse_overrides, varying_keys
from analysis.options import RULE_OPTIONS, add_analysis_options, analysis_of, interrupted, stop_on_sigterm
from analysis.render import rule_lines, status_lines, table_markdown
from analysis.tables import TITLES
from bitnet.records import HYDRA_FOLDER, OVERRIDES_FILE, atomic_file, read_record

PARTS = ["setup", "points", "verdicts", "plots", "tables"]
PART_TITLES = {"setup": "What was run", "points": "Points", "verdicts": "Verdicts", "plots": "Plots",
               "tables": "Tables"}
PLOT_TEXT = {"tokens.png": "unique predicted tokens vs step", "loss.png": "training and held-out loss vs step",
             "collapse_ratio.png": "collapse ratio vs {size} size", "diagnostics.png": "collapse diagnostics vs step",
             "mechanism.png": "parameter-group RMS and logit scale vs step",
             "phase_map.png": "phase map: plateau share of stage 1 per axis value, by plateau phase, with the release"}
BEGIN = re.compile(r"^<!-- generated: (?P<args>.*?) -->\s*$")
END = re.compile(r"^<!-- end generated -->\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
ANALYSIS_OPTIONS = ["steps", "collapse_steps", *(field for field, *_ in RULE_OPTIONS), "size_key", "pool"]


class BadInput(ValueError):
    """A bad command line or generated block: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """Raises BadInput instead of exiting, so that a bad block names the document line it is on."""

    def error(self, message):
        raise BadInput(message)


def section_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """What a section is made of: its folders, the options of the tables command, the parts to show."""
    p.add_argument("sweeps", nargs="*", metavar="SWEEP", help="a sweep folder (hydra.sweep.dir of a -m run); "
                   "folders joined by commas are read as one sweep")
    add_analysis_options(p)
    p.add_argument("--only", nargs="+", metavar="PART", choices=PARTS + [n for n in TITLES if n != "points"],
                   help=f"only these parts: {', '.join(PARTS)} or a table name ({', '.join(TITLES)})")
    p.add_argument("--no-plots", action="store_true", help="leave the plots out")
    return p


def parser() -> argparse.ArgumentParser:
    p = section_options(Parser(prog="python -m analysis report", description="One markdown report (tables, "
                                                                               "verdicts, plots) from sweep folders."))
    p.add_argument("--out", type=Path, help="folder of report.md and report_figures/ (default: the first SWEEP's "
                   "analysis/ folder)")
    p.add_argument("--title", help="the report's title (default: 'Sweep report: ', each sweep's name and the keys "
                                   "that vary)")
    p.add_argument("--update", type=Path, metavar="DOC", help="refresh the generated blocks of this markdown file "
                   "instead (no SWEEP: each block names its own)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the report (or DOC's blocks) "
                   "differs from what the folders give now")
    return p


def block_parser() -> argparse.ArgumentParser:
    p = section_options(Parser(prog="<!-- generated:", add_help=False))
    p.add_argument("--level", type=int, default=2, choices=range(1, 5), help="heading level of the sections")
    return p


# ---- what was run ---------------------------------------------------------------------------------------------
def config_text(value) -> str:
    """A config value as YAML writes it (null, true, 0.0015, [0.9, 0.95]); escaped where it is rendered."""
    return json.dumps(value) if value is None or isinstance(value, (bool, list, dict)) else str(value)


def grid_overrides(sweep_dir: Path) -> tuple[list[list[str]], str]:
    """Every point's command-line overrides as typed (`+sweep=forensics`), in grid order, and where they were read."""
    path = sweep_dir / GRID_MANIFEST
    if path.exists():
        return [p["overrides"] for p in json.loads(path.read_text()).get("points") or []], f"read from {GRID_MANIFEST}"
    folders = find_point_folders(sweep_dir)
    return [yaml.safe_load((f / HYDRA_FOLDER / OVERRIDES_FILE).read_text()) or [] for f in folders], \
        f"read from the point folders: no {GRID_MANIFEST}"


def grid_lines(sweep_dir: Path, name: str) -> list[str]:
    """The keys that vary over the grid with their values in declared order, and the overrides every point shares."""
    typed, source = grid_overrides(sweep_dir)
    overrides = [parse_overrides(lines) for lines in typed]
    varying = varying_keys(overrides)
    values = {k: list(dict.fromkeys(untrusted(config_text(o[k])) if k in o else "(not set)" for o in overrides))
              for k in varying}
    shared = [line for line in typed[0] if all(line in lines for lines in typed)] if typed else []
    lines = [f"`{name}`: {len(overrides)} grid points ({source}); "
             + ("; ".join(f"`{untrusted(k)}` = {', '.join(values[k])}" for k in varying) or "no key varies") + "."]
    if shared:
        lines.append(f"Overrides shared by every point: `{untrusted(' '.join(shared))}`.")
    return lines


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def run_lines(sweep: Sweep) -> list[str]:
    """What the points' run.json files say about how they ran: versions, device, corpus, training time."""
    records = [record.to_json() for record in map(read_record, sweep.points.folder) if record is not None]
    versions = dict.fromkeys(", ".join(f"{k} {v}" for k, v in r["versions"].items()) for r in records
                             if r.get("versions"))
    devices = dict.fromkeys(f"{r['device']}" + (f", {r['cpu_threads']} CPU thread{'s' * (r['cpu_threads'] != 1)}"
                                                 if r.get("cpu_threads") else "") for r in records if r.get("device"))
    corpora = dict.fromkeys(f"{c.get('fingerprint')} ({c['train_tokens']:,} training tokens)"
                            for c in (r.get("corpus") for r in records) if c and c.get("train_tokens"))
    times = [r["elapsed_s"] for r in records if r.get("elapsed_s") is not None]
    lines = [f"{label}: {'; '.join(untrusted(f) for f in found)}." for label, found in
             (("Versions", versions), ("Device", devices), ("Corpus", corpora)) if found]
    if times:
        lines.append(f"Training time (run.json): {duration(sum(times))} over {len(times)} points, "
                     f"{duration(min(times))} to {duration(max(times))} each.")
    return lines


def config_tables(sweep: Sweep, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(what differs, what is shared): the resolved config keys whose value differs between points, one row per
    cell (`varies` when the seeds of a cell differ, seed itself left out), and the keys every point shares."""
    known = sweep.points[sweep.points.status != "missing"]
    configs = [sweep.configs.get((p.sweep, p.point), {}) for _, p in known.iterrows()]
    all_keys = list(dict.fromkeys(k for c in configs for k in c))
    texts = {k: [config_text(c.get(k)) if k in c else "(not set)" for c in configs] for k in all_keys}
    # seed and the cells' own keys are in each row's label already
    differing = [k for k in all_keys if len(set(texts[k])) > 1 and k != "seed" and k not in keys]
    shared = pd.DataFrame({"key": [k for k in all_keys if len(set(texts[k])) == 1],
                           "value": [texts[k][0] for k in all_keys if len(set(texts[k])) == 1]})
    if not differing:
        return pd.DataFrame(), shared
    cells = {}
    for i, (_, point) in enumerate(known.iterrows()):
        label = ", ".join(f"{k}={fmt_value(point[k])}" for k in keys) or "all points"
        cells.setdefault(label, []).append(i)
    rows = [{"cell": label, **{k: texts[k][rows[0]] if len({texts[k][i] for i in rows}) == 1 else "varies"
                               for k in differing}} for label, rows in cells.items()]
    return pd.DataFrame(rows), shared


def setup_markdown(section: "Section") -> str:
    lines = []
    for folder, name in zip(section.folders, section.names):
        lines += grid_lines(folder, name)
    differing, shared = config_tables(section.analysis.sweep, section.analysis.keys)
    text = "\n\n".join(lines) + "\n"
    if len(differing):
        text += "\nResolved settings that differ between points (run.json):\n\n" + \
                to_markdown(differing) + "\n"
    if len(shared):
        text += (f"\n<details><summary>Resolved settings shared by every point ({len(shared)} keys, run.json)"
                 f"</summary>\n\n{to_markdown(shared)}\n\n</details>\n")
    run = run_lines(section.analysis.sweep)
    return text + ("\n" + "\n".join(f"- {line}" for line in run) + "\n" if run else "")


# ---- verdicts -------------------------------------------------------------------------------------------------
def cell_label(row, keys: list[str]) -> str:
    return ", ".join(f"{untrusted(k)}={untrusted(row[k])}" for k in keys) or "all points"


def verdicts_markdown(section: "Section") -> str:
    a = section.analysis
    tables, keys = a.tables, a.keys
    signature = tables["signature"][0]
    text = ("Collapse signature per cell (yes / partial / no with k/n seeds; its rule is printed with the "
            "signature table):\n\n"
            + "".join(f"- {cell_label(r, keys)}: {untrusted(r['seed signature'])}\n" for _, r in signature.iterrows()))
    if a.interventions_summary:
        text += "\nInterventions: " + " ".join(untrusted(line) for line in a.interventions_summary) + "\n"
    factorial = tables["factorial"][0]
    if len(factorial):
        text += ("\nLR switch x WD switch, effects on the completed points' final values, 95% t intervals (the "
                 "factorial table):\n\n")
        others = [k for k in keys if k in factorial and k != "effect"]
        for _, row in factorial.iterrows():
            where = f" ({cell_label(row, others)})" if others else ""
            text += (f"- {untrusted(row['effect'])}{where}: unique tokens {untrusted(row['final unique tokens'])}, "
                     f"eval loss {untrusted(row['final eval loss'])}\n")
    decision = tables["decision"][1]
    others = [k for k in keys if k != a.size_key]
    for _, row in decision.iterrows():
        where = f" ({cell_label({k: fmt_value(row[k]) for k in others}, others)})" if others else ""
        flags = f"; flags: {untrusted(row['flags'])}" if row["flags"] else ""
        text += (f"\nScaling decision{where} at step {step_label(row.step)}: outcome {untrusted(row.outcome)}, "
                 f"{untrusted(row.pattern)}{flags}.\n")
    return text


# ---- a section ------------------------------------------------------------------------------------------------
@dataclass
class Section:
    folders: list[Path]       # absolute
    names: list[str]          # the folders' names
    analysis: Analysis
    slug: str                 # prefix of its plots' file names


def slug_of(names: list[str], used: set[str]) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "+".join(names)) or "sweep"
    unique, n = slug, 1
    while unique in used:
        n += 1
        unique = f"{slug}-{n}"
    used.add(unique)
    return unique


def load_section(spec: str, args, base: Path, used: set[str]) -> Section:
    """One SWEEP argument (folders joined by commas, relative to `base`) analysed as one sweep."""
    folders = [(base / part).resolve() for part in spec.split(",") if part]
    if not folders:
        raise BadInput(f"empty SWEEP {spec!r}")
    names = [f.name for f in folders]
    return Section(folders, names, analysis_of(folders, args), slug_of(names, used))


class Paths:
    """Folders as the report shows them: relative to the report's folder, never absolute."""

    def __init__(self, base: Path, sections: list[Section]):
        self.base = base.resolve()
        self.folders = sorted({str(f) for s in sections for f in s.folders}, key=len, reverse=True)

    def show(self, path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.base)).as_posix()

    def scrub(self, text: str) -> str:
        """A line with the sweep folders in it (the loader's warnings, a missing point's folder), relative."""
        for folder in self.folders:
            text = text.replace(folder, self.show(folder))
        return text


def section_figures(section: Section) -> list[tuple[str, object]]:
    """[(plot name, Figure or the path of a PNG to copy)]: the PNGs the tables command wrote into its default
    folder (the first folder's analysis/) when they were drawn from this very Analysis, else new figures."""
    from analysis.plots import drawn_plots, figures

    drawn = drawn_plots(section.analysis, section.folders[0] / "analysis")
    return [(p.name, p) for p in drawn] if drawn else figures(section.analysis)


def section_markdown(section: Section, parts: list[str], level: int, heading: bool, paths: Paths,
                     figure_dir: Path) -> tuple[str, list[tuple[Path, object]]]:
    """(markdown, [(png path, Figure or PNG to copy)]) of one section: `parts` in order, each under a heading at
    `level` (+1 under the section's own heading)."""
    a = section.analysis
    tables = a.tables
    links = ", ".join(f"[{name}]({paths.show(f)})" for f, name in zip(section.folders, section.names))
    text, pngs = "", []
    if heading:
        plural = "s" * (len(section.folders) > 1)
        text += f"{'#' * level} {' + '.join(section.names)}\n\nSweep folder{plural}: {links}\n\n"
        level += 1
    for part in parts:
        if part not in PARTS:  # one table, its phase rule with it
            text += table_markdown(part, a, level, phase_above=False) + "\n"
            continue
        text += f"{'#' * level} {PART_TITLES[part]}\n\n"
        if part == "setup":
            text += setup_markdown(section)
        elif part == "points":
            lines = [paths.scrub(line) for line in status_lines(a.sweep)]
            text += lines[0] + "\n\n" + "".join(f"{line}\n" for line in lines[1:]) + "\n" * (len(lines) > 1)
            text += table_markdown("points", a, level + 1)
        elif part == "verdicts":
            text += verdicts_markdown(section)
        elif part == "plots":
            for name, fig in section_figures(section):
                path = figure_dir / f"{section.slug}-{name}"
                pngs.append((path, fig))
                text += f"![{PLOT_TEXT[name].format(size=untrusted(a.size_key))}]({paths.show(path)})\n\n"
            text = text.rstrip("\n") + "\n"
        elif part == "tables":
            text += "\n\n".join(rule_lines(a)) + "\n"
            shown = [n for n in tables if n != "points" and len(tables[n][0])]
            text += "".join(f"\n{table_markdown(n, a, level + 1)}" for n in shown)
            empty = [n for n in tables if n != "points" and not len(tables[n][0])]
            if empty:
                text += "\nNot applicable here: " + "; ".join(f"{TITLES[n]} ({a.empty_reason(n)})"
                                                              for n in empty) + ".\n"
        text += "\n"
    return text.rstrip("\n") + "\n", pngs


def sections_markdown(args, base: Path, shown_from: Path, figure_dir: Path, used: set[str], level: int = 2
                      ) -> tuple[str, list[tuple[Path, object]], list[Section]]:
    """The sections of args.sweeps (folders relative to `base`), paths shown relative to `shown_from` (the
    folder of the markdown file), plots named into `figure_dir`."""
    sections = [load_section(spec, args, base, used) for spec in args.sweeps]
    parts = args.only or PARTS
    if args.no_plots:
        parts = [p for p in parts if p != "plots"]
    paths = Paths(shown_from, sections)
    heading = not args.only or len(sections) > 1
    texts, pngs = [], []
    for section in sections:
        text, figs = section_markdown(section, parts, level, heading, paths, figure_dir)
        texts.append(text)
        pngs += figs
    return "\n".join(texts), pngs, sections


def changed_options(args) -> str:
    """The analysis options given with a value other than their default, as typed: `--collapse-steps 1000 4000`."""
    defaults = section_options(Parser()).parse_args([])
    shown = []
    for dest in ANALYSIS_OPTIONS:
        value = getattr(args, dest)
        if value != getattr(defaults, dest):
            option = "--" + dest.replace("_", "-")
            shown.append(option if value is True else f"{option} {' '.join(map(str, value))}"
                         if isinstance(value, list) else f"{option} {value}" if isinstance(value, str)
                         else f"{option} {value:g}")
    return " ".join(shown)


def section_title(section: Section) -> str:
    """A sweep as the title names it: its folder below multirun/ (a preset's `scaling/smoke`, a default folder's
    date and time of day), else the folder's name; then the keys that vary across its points."""
    def name(folder: Path) -> str:
        parts = folder.parts
        return "/".join(parts[len(parts) - parts[::-1].index("multirun"):]) if "multirun" in parts else folder.name

    varying = section.analysis.sweep.swept
    return " + ".join(map(name, section.folders)) + (f" (varying {', '.join(varying)})" if varying else "")


def report_markdown(args, out: Path) -> tuple[str, list[tuple[Path, object]]]:
    body, pngs, sections = sections_markdown(args, Path.cwd(), out, out / "report_figures", set())
    paths = Paths(out, sections)
    title = args.title or "Sweep report: " + "; ".join(section_title(s) for s in sections)
    options = changed_options(args)
    intro = (f"# {title}\n\nMade by `python -m analysis.document` from "
             + ", ".join(" + ".join(f"`{paths.show(f)}`" for f in s.folders) for s in sections)
             + " (paths relative to this file)" + (f" with `{options}`" if options else "") + ". "
             "Every table states its rule above it. With several seeds per cell a number is the mean with its 95% "
             "t interval, `mean [lo, hi]`, and a verdict is counted over the seeds, `yes 2/3`.\n\n")
    return intro + body, pngs


# ---- generated blocks of a hand-written document --------------------------------------------------------------
def refresh_document(doc: Path) -> tuple[str, list[tuple[Path, object]]]:
    """The document with every generated block regenerated, and the plots they link."""
    base, lines = doc.parent, doc.read_text().splitlines(keepends=True)
    figure_dir, used = base / f"{doc.stem}_figures", set()
    out, pngs, i, fenced = [], [], 0, False
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):  # a marker inside a fenced code block is an example, not a block
            fenced = not fenced
        if fenced or not (BEGIN.match(line) or END.match(line)):
            out.append(line)
            i += 1
            continue
        if END.match(line):
            raise BadInput(f"{doc} line {i + 1}: `<!-- end generated -->` without a `<!-- generated: ... -->` above it")
        begin = BEGIN.match(line)
        end = next((j for j in range(i + 1, len(lines)) if END.match(lines[j]) or BEGIN.match(lines[j])), None)
        if end is None or BEGIN.match(lines[end]):
            raise BadInput(f"{doc} line {i + 1}: `<!-- generated: ...` has no `<!-- end generated -->` after it")
        try:
            args = block_parser().parse_args(shlex.split(begin["args"]))
            if not args.sweeps:
                raise BadInput("no SWEEP folder given")
            text, figs, _ = sections_markdown(args, base, base, figure_dir, used, args.level)
        except (BadInput, NotASweep, BadStep, ValueError) as err:
            raise BadInput(f"{doc} line {i + 1}: {err}") from None
        out += [line.rstrip("\n") + "\n", "\n", text, "\n", lines[end].rstrip("\n") + "\n"]
        pngs += figs
        i = end + 1
    return "".join(out), pngs


# ---- the command ----------------------------------------------------------------------------------------------
def stale(path: Path, text: str, pngs) -> list[str]:
    """Why the file on disk is not what the folders give now: a diff, or the plots it links that do not exist."""
    old = path.read_text() if path.exists() else ""
    diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(), str(path), "regenerated", lineterm="", n=1))
    return diff[:40] + [f"missing plot: {p}" for p, _ in pngs if not p.exists()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with stop_on_sigterm():
            return _main(argv)
    except KeyboardInterrupt as err:  # while the folders are read and the report is built: nothing written yet
        return interrupted(err, "nothing was written")


def _main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
        if args.update and (args.sweeps or args.out or args.title):
            raise BadInput("--update DOC takes no SWEEP, --out or --title: each generated block names its own")
        if not args.update and not args.sweeps:
            raise BadInput("give SWEEP folders (a report) or --update DOC (a document's generated blocks)")
        if args.update:
            if not args.update.is_file():
                raise BadInput(f"--update {args.update}: no such file")
            target = args.update
            text, pngs = refresh_document(target)
        else:
            out = args.out or Path(args.sweeps[0].split(",")[0]) / "analysis"
            target = out / "report.md"
            text, pngs = report_markdown(args, out.resolve())
    except (BadInput, NotASweep, BadStep, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        problems = stale(target, text, pngs)
        if problems:
            again = shlex.join(a for a in argv if a != "--check")
            print(f"{target} is stale: regenerate it with `python -m analysis.document {again}`", file=sys.stderr)
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    from analysis.plots import save_figure

    try:  # main turned SIGTERM into KeyboardInterrupt
        target.parent.mkdir(parents=True, exist_ok=True)
        for path, fig in pngs:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(fig, Path):  # drawn by the tables command from the same Analysis
                shutil.copyfile(fig, path)
            else:
                save_figure(fig, path)
        with atomic_file(target) as handle:  # last, whole or not at all: never a half-written report
            handle.write(text)
    except KeyboardInterrupt as err:
        return interrupted(err, f"{target} was not written (an earlier one is left as it was; some of its figures "
                                f"may be new)")
    print(f"wrote {target} and {len(pngs)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
