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

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bitnet.records import COMPLETED, switch_steps

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
    record: dict         # a run.json as bitnet would write it, with only what is known
    frame: pd.DataFrame  # metrics.csv columns (mapped), numbers as read


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
    return text


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


def read_table(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """The file as a frame with metrics.csv column names."""
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ForeignCSVError(f"{path}: not a CSV file with a header ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
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
    return frame


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
        frame = read_table(path, labelling.columns)
        runs.append(ForeignRun(path, labels, foreign_record(labels, frame), frame))
    return runs


def foreign_record(labels: dict, frame: pd.DataFrame) -> dict:
    """A run.json for a foreign run: its labels as config, and nothing that the file and labels do not say."""
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
    return {"status": COMPLETED if finished else IMPORTED, "last_step": steps, "total_steps": steps,
            "eval_positions": None, "eval_unique_targets": None, "unigram_entropy": None,
            "vocab_size": labels.get("data.vocab_size"),
            "switch_steps": switch_steps(config), "config": config, "error": note}


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
