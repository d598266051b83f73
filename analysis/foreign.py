"""CSV files from other training code, read as grid points: `python -m analysis.tables scale_*_10k.txt ...`.

A foreign file holds one run's evaluations, one row per step, with a header. Its columns are mapped onto
metrics.csv's: by `--columns "Unique Tokens=unique_tokens"`, else by name once lower-cased with every run of
other characters turned into `_` ("Step,Loss,Unique Tokens" -> step, loss, unique_tokens). Other columns are
kept under that name.

What a file name cannot say comes from labels, `key=value` like a sweep's overrides (`hidden=256`,
`wd.switch_step=5000`): for every file (`--set`), from the file name (`--name-pattern
"scale_{hidden}_{train.steps}k"`: each `{key}` takes the text at its place; without a pattern, `key=value`
pairs separated by commas, as Hydra names sweep folders) and for one file (`--label FILE key=value...`),
later ones winning. Labels are the run's config: `{lr,wd}.switch_step` mark the switch, `train.steps` the
run length, `data.vocab_size` the vocabulary. What neither the file nor a label gives (evaluated positions,
vocabulary, eval loss...) stays unknown, and a run is `completed` only when its last row reaches
train.steps; otherwise it is `imported`, and the figures that need a finished run (final tokens, final eval
loss) are left empty.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bitnet.records import COMPLETED, DIVERGED, RunRecord, run_record

IMPORTED = "imported"  # a foreign run not known to have finished
SUFFIXES = (".csv", ".txt")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SCALES = {"k": 1_000, "K": 1_000, "M": 1_000_000}


class ForeignCSVError(ValueError):
    """A foreign CSV or its labels cannot be read as asked (one line, names the file and the option)."""


@dataclass
class Labelling:
    columns: dict[str, str] = field(default_factory=dict)    # foreign header -> metrics.csv column
    pattern: str | None = None                                 # file-name pattern with {key} fields
    common: dict = field(default_factory=dict)                 # labels of every file
    per_file: dict[str, dict] = field(default_factory=dict)    # file name or path -> labels


@dataclass
class ForeignRun:
    path: Path
    labels: dict
    record: RunRecord    # a run.json as bitnet would write it, with only what is known
    frame: pd.DataFrame  # metrics.csv columns (mapped), numbers as read, one row per step
    warnings: list[str] = field(default_factory=list)  # e.g. a step written twice


def value(text: str):
    """A label's value: integers, floats (`10k` = 10000, `1.5M` = 1500000), true/false/null, else text."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    scale = _SCALES.get(text[-1:], 1) if len(text) > 1 else 1
    number = text[:-1] if scale > 1 else text
    if not _NUMBER.fullmatch(number):
        return text
    if scale == 1 and not re.search(r"[.eE]", number):
        return int(number)
    parsed = float(number) * scale
    return int(parsed) if scale > 1 and parsed.is_integer() else parsed


def parse_labels(items, option: str) -> dict:
    """['hidden=256', 'wd.switch_step=5k'] -> {'hidden': 256, 'wd.switch_step': 5000}."""
    labels = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ForeignCSVError(f"{option} {item!r}: expected key=value (e.g. hidden=256)")
        labels[key.strip()] = value(text)
    return labels


def parse_columns(items) -> dict[str, str]:
    """['Unique Tokens=unique_tokens'] -> {'Unique Tokens': 'unique_tokens'}."""
    mapping = {}
    for item in items:
        theirs, sep, ours = item.rpartition("=")
        if not sep or not theirs or not ours:
            raise ForeignCSVError(f"--columns {item!r}: expected THEIR_NAME=our_name (e.g. 'Unique Tokens=unique_tokens')")
        mapping[theirs] = ours.strip()
    return mapping


def normalized(name: str) -> str:
    """'Unique Tokens' -> 'unique_tokens', 'Eval-Loss' -> 'eval_loss'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def pattern_regex(pattern: str) -> re.Pattern:
    """'scale_{hidden}_{train.steps}k' -> a regex with one group per {key}, in order."""
    parts = re.split(r"\{([^{}]+)\}", pattern)
    if len(parts) == 1:
        raise ForeignCSVError(f"--name-pattern {pattern!r}: no {{key}} field in it (e.g. 'scale_{{hidden}}_{{train.steps}}k')")
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<f{i // 2}>.+?)" for i, p in enumerate(parts))
    return re.compile(regex)


def labels_from_name(path: Path, pattern: str | None) -> dict:
    if pattern is None:  # Hydra-style names: hidden=256,seed=0
        pairs = [p for p in path.stem.split(",") if "=" in p]
        return parse_labels(pairs, "file name") if pairs and len(pairs) == len(path.stem.split(",")) else {}
    regex = pattern_regex(pattern)
    keys = re.findall(r"\{([^{}]+)\}", pattern)
    match = regex.fullmatch(path.stem) or regex.fullmatch(path.name)
    if not match:
        raise ForeignCSVError(f"{path}: the file name does not match --name-pattern {pattern!r}")
    return {key: value(match.group(f"f{i}")) for i, key in enumerate(keys)}


def nested(labels: dict) -> dict:
    """{'wd.switch_step': 5000, 'hidden': 256} -> {'wd': {'switch_step': 5000}, 'hidden': 256}."""
    config = {}
    for key, item in labels.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ForeignCSVError(f"label {key}: {part} is already a value, not a group")
        node[leaf] = item
    return config


def _check_rows(path: Path, text: str) -> None:
    """Every data row as wide as the header, or one wider with an empty last field (a trailing comma, which
    `index_col=False` reads as nothing). pandas would otherwise shift the columns (the first field becomes the
    index) or drop the extra fields with only a warning, so any other width is an error naming the line."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = next(rows, [])
    width = len(header) - (1 if header and not header[-1].strip() else 0)
    for number, row in enumerate(rows, start=2):
        fields = row[:-1] if len(row) == width + 1 and not row[-1].strip() else row
        if len(fields) > width and any(f.strip() for f in fields[width:]):
            raise ForeignCSVError(f"{path}, line {number}: {len(fields)} fields but the header has {width} columns "
                                  f"({','.join(row)!r}); fix the row or add the column's name to the header")


def parse_steps(path: Path, steps: pd.Series) -> pd.Series:
    """The step column as integers: `1000`, `1k`, `10k`, `1.5M` (as in labels); anything else, or an empty step,
    is an error naming the file and line (line 1 is the header), never a row quietly dropped."""
    parsed = []
    for line, text in zip(range(2, len(steps) + 2), steps):
        number = value(str(text)) if not pd.isna(text) else None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ForeignCSVError(f"{path}, line {line}: step {'(empty)' if pd.isna(text) else repr(str(text))} is not "
                                  f"a number of steps (allowed: whole numbers such as 1000, 1k, 10k, 1.5M)")
        parsed.append(number)
    return pd.Series(parsed, index=steps.index, dtype="int64")


def duplicate_steps(path, frame: pd.DataFrame) -> list[str]:
    """Warnings for steps written more than once with identical rows (kept once); rows of one step that differ
    are an error: which of them holds the run's figures cannot be known."""
    notes = []
    for step, rows in frame[frame.step.duplicated(keep=False)].groupby("step", sort=True):
        if len(rows.astype(str).drop_duplicates()) > 1:
            raise ForeignCSVError(f"{path}: step {step} is written {len(rows)} times with different values; keep "
                                  f"the row that holds the run's figures and delete the others")
        notes.append(f"{path}: step {step} is written {len(rows)} times (identical rows, read once)")
    return notes


def _read(text: str, **options) -> pd.DataFrame:
    # index_col=False: a trailing comma on the rows never turns the first column into the index; pandas warns
    # that it drops the empty last field, which _check_rows has already told apart from a real extra field
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        return pd.read_csv(io.StringIO(text), skipinitialspace=True, index_col=False, **options)


def read_table(path: Path, columns: dict[str, str]) -> tuple[pd.DataFrame, list[str], tuple[int, str] | None]:
    """The file as a frame with metrics.csv column names and integer steps, the warnings about it, and where
    its loss is first written as nan or inf (first_nonfinite)."""
    try:
        text = Path(path).read_text()
        _check_rows(path, text)
        frame = _read(text)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as err:
        raise ForeignCSVError(f"{path}: not a CSV file with a header ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    # a header that ends in a comma names an empty last column: nothing to keep
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed: ") and frame[c].isna().all()])
    if _NUMBER.fullmatch(str(frame.columns[0]).strip()):
        raise ForeignCSVError(f"{path}: the first line is not a header (expected column names such as "
                              f"Step,Loss,Unique Tokens)")
    unknown = [name for name in columns if name not in frame.columns]
    if unknown:
        raise ForeignCSVError(f"{path}: --columns names {', '.join(map(repr, unknown))}, which this file does not "
                              f"have; its columns are {', '.join(map(repr, frame.columns))}")
    renamed = {name: columns.get(name, normalized(str(name))) for name in frame.columns}
    frame = frame.rename(columns=renamed)
    if "step" not in frame.columns:
        raise ForeignCSVError(f"{path}: no step column; its columns are {', '.join(map(repr, renamed))}; map one "
                              f"with --columns 'NAME=step'")
    if frame.columns.duplicated().any():
        twice = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise ForeignCSVError(f"{path}: several columns map to {', '.join(twice)}; map them apart with --columns")
    frame["step"] = parse_steps(path, frame["step"])
    notes = duplicate_steps(path, frame)
    # The same cells as text: a loss written as nan or inf (a diverged run) and an empty cell (not logged at
    # that step) both read as NaN above, and must not be taken for one another.
    cells = _read(text, dtype=str, keep_default_na=False)
    cells = cells[[c for c in cells.columns if c in renamed]].rename(columns=renamed)
    return frame.drop_duplicates("step"), notes, first_nonfinite(frame, cells)


NONFINITE = {"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def first_nonfinite(frame: pd.DataFrame, cells: pd.DataFrame) -> tuple[int, str] | None:
    """(step, "loss nan") at the first row whose training or eval loss is written as nan or inf, else None."""
    for row, step in sorted(enumerate(frame.step), key=lambda item: item[1]):
        for column in ("loss", "eval_loss"):
            if column in cells and str(cells[column].iloc[row]).strip().lower() in NONFINITE:
                return int(step), f"{column} {cells[column].iloc[row].strip()}"
    return None


def _label_lookup(labelling: Labelling, files: list[Path]) -> dict[Path, dict]:
    """Each file's --label labels; a --label naming no imported file is an error (a typo would drop it)."""
    found = {f: {} for f in files}
    for key, labels in labelling.per_file.items():
        matches = [f for f in files if key in (f.name, f.stem, str(f)) or Path(key).resolve() == f.resolve()]
        if not matches:
            raise ForeignCSVError(f"--label {key}: no imported file has this name; imported: "
                                  f"{', '.join(f.name for f in files)}")
        for f in matches:
            found[f].update(labels)
    return found


def csv_files(path: Path) -> list[Path]:
    """A file, or the CSV/text files directly in a folder (sorted)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise ForeignCSVError(f"{path}: no {'/'.join(SUFFIXES)} files in this folder")
    return files


def read_foreign(paths, labelling: Labelling | None = None) -> list[ForeignRun]:
    """Every file named by `paths` (files, or folders of them) as a ForeignRun; raises ForeignCSVError."""
    labelling = labelling or Labelling()
    files = [f for path in paths for f in csv_files(Path(path))]
    per_file = _label_lookup(labelling, files)
    runs = []
    for path in files:
        labels = {**labelling.common, **labels_from_name(path, labelling.pattern), **per_file[path]}
        frame, notes, nonfinite = read_table(path, labelling.columns)
        runs.append(ForeignRun(path, labels, foreign_record(labels, frame, nonfinite), frame, notes))
    return runs


def foreign_record(labels: dict, frame: pd.DataFrame, nonfinite: tuple[int, str] | None = None) -> RunRecord:
    """A run.json for a foreign run: its labels as config, and nothing that the file and labels do not say. A
    loss written as nan or inf makes it `diverged` at that step, as bitnet records its own runs."""
    config = nested(labels)
    for key in ("train.steps", "lr.switch_step", "wd.switch_step"):
        if key in labels and not (isinstance(labels[key], int) and not isinstance(labels[key], bool)):
            raise ForeignCSVError(f"label {key}={labels[key]}: expected a whole number of steps")
    steps = labels.get("train.steps")
    reached = pd.to_numeric(frame["step"], errors="coerce").max()
    finished = steps is not None and not pd.isna(reached) and reached >= steps
    note = None if finished else (
        f"stops at step {reached:.0f} of train.steps={steps}" if steps is not None else
        "whether this run finished is unknown: give train.steps (--set, --name-pattern or --label)")
    status = DIVERGED if nonfinite else COMPLETED if finished else IMPORTED
    if nonfinite:
        note = f"diverged: {nonfinite[1]} at step {nonfinite[0]}"
    return run_record(status, last_step=steps, total_steps=steps, diverged_step=nonfinite[0] if nonfinite else None,
                      vocab_size=labels.get("data.vocab_size"), labels=labels, source="foreign CSV", config=config,
                      error=note)


def add_foreign_arguments(parser) -> None:
    """The analysis command's options for foreign CSVs (argparse)."""
    group = parser.add_argument_group("CSV files from other training code")
    group.add_argument("--columns", nargs="+", metavar="THEIRS=ours", help="column mapping, e.g. "
                       "'Unique Tokens=unique_tokens' (default: names lower-cased, other characters -> _)")
    group.add_argument("--name-pattern", metavar="PATTERN", help="labels from file names, e.g. "
                       "'scale_{hidden}_{train.steps}' (default: key=value pairs separated by commas)")
    group.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="labels of every file, e.g. "
                       "wd.switch_step=5000 train.steps=10000")
    group.add_argument("--label", nargs="+", action="append", metavar="FILE KEY=VALUE",
                       help="labels of one file (repeatable), e.g. --label run3.csv hidden=512")


def labelling_from(args) -> Labelling:
    """A Labelling from the options of `add_foreign_arguments`; raises ForeignCSVError on a malformed one."""
    return Labelling(columns=parse_columns(args.columns or []), pattern=args.name_pattern,
                     common=parse_labels(args.set or [], "--set"),
                     per_file={file: parse_labels(items, f"--label {file}") for file, *items in args.label or []})
