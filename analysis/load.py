"""Sweep folders -> one tidy pandas DataFrame, one row per (grid point, step).

A sweep folder is what `python -m bitnet.run -m ...` leaves: `multirun.yaml`, `grid.json` (every grid point's
overrides and folder, written before anything is launched) and one folder per point holding
`.hydra/overrides.yaml`, `run.json` and `metrics.csv`. Every point of grid.json gets rows, whatever its state,
so a point that never started is listed as `missing` instead of silently vanishing from the tables. A sweep
made without grid.json is read from the point folders on disk (with a warning: missing points cannot be seen).

Points from outside a sweep load the same way: a run folder (metrics.csv + run.json, e.g. written by
bitnet.probe or its callbacks; its run.json `labels` play the part of the overrides) and CSV files from other
training code (analysis/foreign.py). Among those, the label keys whose values differ are the swept keys.

    from analysis.load import load_sweeps
    sweep = load_sweeps(["multirun/2026-01-01/12-00-00"])
    sweep.frame    # one row per (point, step): swept keys, config values, status, metrics
    sweep.points   # one row per point
    sweep.swept    # the swept keys' columns, e.g. ["hidden", "seed"]; a swept group lr / wd is "lr.name" /
                   # "wd.name" (the CSV's lr and wd columns keep the learning rate and weight decay)
    sweep.configs  # (sweep, point) -> the point's resolved config, flattened ({"lr.warmup": 5, ...})
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.foreign import SUFFIXES as FOREIGN_SUFFIXES
from analysis.foreign import Labelling, read_foreign
from analysis.overrides import parse_override
from bitnet.records import (CONFIG_FILE, CORE_COLUMNS, FINISHED_STATUSES, GRID_MANIFEST, HYDRA_FOLDER, METRICS_FILE,
                            OVERRIDES_FILE, SWEEP_CONFIG, RecordError, RunRecord, read_record, torn_last_line)

# Point statuses: the run statuses of bitnet/records.py (FINISHED_STATUSES: done), plus two that only the
# loader can see.
MISSING = "missing"      # in grid.json, no folder on disk
NO_RECORD = "no_record"  # folder made by Hydra, but no run.json (starting, or rejected before training: see run.log)
# Resolved config values worth a column even when not swept: they tell cells apart when several sweeps are
# loaded together and they label the switches. Where a schedule switches is not among them: that is the
# recorded lr_switch / wd_switch (run.json's switch_steps), not the `switch_step` key, which is null for the
# midpoint.
CONFIG_COLUMNS = ["hidden", "seed", "model.layers", "model.n_heads", "model.quant", "model.quantize_head",
                  "lr.name", "lr.peak", "lr.stage2_peak", "wd.name", "wd.value", "wd.stage2_value", "train.steps",
                  "train.batch_size", "train.label_smoothing", "train.grad_clip", "data.name", "data.vocab_size",
                  "data.seq_len"]
# What run.json states about each point (bitnet.records.RunRecord).
RECORD_COLUMNS = ["params_total", "params_non_embedding", "eval_positions", "eval_unique_targets", "unigram_entropy",
                  "ln_vocab", "lr_switch", "wd_switch", "switch_unknown", "last_step", "total_steps", "error"]


class NotASweep(ValueError):
    """The folder is not a Hydra sweep folder (or does not exist)."""


@dataclass
class Sweep:
    frame: pd.DataFrame                         # one row per (point, step)
    points: pd.DataFrame                        # one row per point
    swept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    configs: dict = field(default_factory=dict)  # (sweep, point) -> flattened resolved config

    @property
    def missing(self) -> pd.DataFrame:
        return self.points[self.points.status == MISSING]

    @property
    def unfinished(self) -> pd.DataFrame:
        """Points that are not completed or diverged: missing, no_record, running, failed."""
        return self.points[~self.points.status.isin(FINISHED_STATUSES)]


# ---- the grid ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _parse_one(line: str) -> tuple[str, object] | None:
    """One override line -> (key, value), None for a deletion. Cached: the points of a sweep share most of their
    lines (twice per point: grid.json and overrides.yaml)."""
    override = parse_override(line)
    return None if override.is_delete else (override.key, override.value)


def parse_overrides(lines: list[str]) -> dict:
    """['hidden=32', '+intervention=standard'] -> {'hidden': 32, 'intervention': 'standard'}, values typed as
    Hydra types them (analysis.overrides); OverrideError on a line that is not one override."""
    pairs = [_parse_one(str(line)) for line in lines]
    return {key: copy.deepcopy(value) for key, value in filter(None, pairs)}  # a cached list is never shared


def read_manifest(sweep_dir: Path) -> list[dict] | None:
    """grid.json (written by bitnet's sweeper before it launches anything): [{overrides, folder}] in launch
    order, which is the order the sweep declares its values in; None for a sweep made without it."""
    path = sweep_dir / GRID_MANIFEST
    if not path.exists():
        return None
    points = read_document(path, json.loads, dict, "a JSON object").get("points") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) and isinstance(p.get("overrides"), list)
                                               for p in points):
        raise NotASweep(f"{path}: expected {{\"points\": [{{\"overrides\": [...], \"folder\": ...}}, ...]}}, as "
                        f"bitnet's sweeper writes it")
    inside = Path(sweep_dir).resolve()
    for p in points:  # a folder entry is read from: it must not lead out of the sweep folder
        if p.get("folder") and inside not in (inside / str(p["folder"])).resolve().parents:
            raise NotASweep(f"{path}: the point folder {str(p['folder'])!r} is outside the sweep folder; grid.json "
                            f"names folders inside it")
    return [{"overrides": parse_overrides(p["overrides"]), "folder": p.get("folder") or ""} for p in points]


def read_document(path: Path, parse, kind: type, what: str):
    """A small JSON or YAML file of a results folder, parsed; NotASweep (one line naming the file) when it is not
    a regular file (a folder; a FIFO, whose read would block forever), is torn or is not `kind`."""
    if not path.is_file():
        raise NotASweep(f"{path}: not a regular file")
    try:
        value = parse(path.read_text())
    except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotASweep(f"{path}: cannot be read as {what} (torn or not written by bitnet?): {reason}") from None
    if not isinstance(value, kind):
        raise NotASweep(f"{path}: expected {what}, found {type(value).__name__} {str(value)[:40]!r}")
    return value


def varying_keys(overrides: list[dict]) -> list[str]:
    """The keys whose value differs between points, in the order they are first written."""
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    return [k for k in keys if len({repr(o.get(k)) for o in overrides}) > 1]


# ---- one point ----------------------------------------------------------------------------------------------
def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _config_value(config: dict, flat: dict, key: str):
    """A dotted key's resolved value; a config group (lr, wd, model...) reads as its `name`."""
    if key in flat:
        return flat[key]
    node = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node.get("name") if isinstance(node, dict) else None


def _resolved_config(folder: Path, record: RunRecord | None) -> dict:
    if record and isinstance(record.config, dict) and record.config:
        return record.config
    path = folder / HYDRA_FOLDER / CONFIG_FILE
    if not path.exists():
        return {}
    config = safe_yaml(path.read_text()) or {}
    return _plain_references(config, config) if isinstance(config, dict) else {}


_REFERENCE = re.compile(r"^\$\{([\w.]+)\}$")


def _plain_references(node, root: dict, depth: int = 0, done: dict | None = None):
    """The config with each plain `${a.b}` reference replaced by that key's value in the same file. Nothing else
    is interpreted: a folder is untrusted, and resolving it with OmegaConf would run its resolvers
    (`${oc.env:VAR}` would copy an environment variable into a report meant to be committed). Each YAML node is
    visited once (`done`), so aliases nested many levels deep cannot multiply the work."""
    done = {} if done is None else done
    if isinstance(node, (dict, list)):
        if id(node) not in done:
            done[id(node)] = ({k: _plain_references(v, root, depth, done) for k, v in node.items()}
                              if isinstance(node, dict) else [_plain_references(v, root, depth, done) for v in node])
        return done[id(node)]
    match = _REFERENCE.match(node) if isinstance(node, str) and depth < 8 else None
    if match is None:
        return node
    target = root
    for part in match.group(1).split("."):
        if not isinstance(target, dict) or part not in target:
            return node  # a reference to nothing in the file (a hydra.* runtime key): kept as written
        target = target[part]
    return _plain_references(target, root, depth + 1, done)


MAX_COLUMNS = 1000  # bitnet writes about 30; a probe or foreign run may add some, never hundreds


def read_metrics(path: Path, warn=None) -> pd.DataFrame:
    """metrics.csv with the standard columns always present (NaN when absent), extra columns kept, numbers
    coerced. A last line without its newline or with fewer fields than the header was torn by a kill mid-write
    (`10000,,1`, or `1000` cut from `10000`): it is dropped, and `warn` hears about it."""
    if Path(path).exists() and not Path(path).is_file():  # a folder, or a FIFO that would block the read
        raise NotASweep(f"{path}: not a regular file")
    if Path(path).exists():  # a header of a million columns took pandas 400 s and 2.5 GB: refused up front
        with open(path, newline="") as handle:
            header = handle.readline(MAX_COLUMNS * 256)  # enough for any sane header, bounded for any other
        columns = header.count(",") + 1
        if columns > MAX_COLUMNS:
            counted = f"{columns}" if header.endswith("\n") else f"at least {columns}"
            raise NotASweep(f"{path}: {counted} columns in its header; a metrics.csv has at most {MAX_COLUMNS}")
    if not Path(path).exists():
        return tidy_metrics(pd.DataFrame())
    # Parsed straight from the file, never held as text (a 200 MB metrics.csv read whole, split into lines and
    # copied took 5 GB): whether the last line is torn is told by its last bytes and the header alone.
    torn = torn_last_line(path)
    if torn is not None and warn:
        warn(f"{path}: last line {torn!r} is torn (cut off mid-write), dropped")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except pd.errors.ParserError as err:  # rows wider than the header, e.g. columns added on a resumed run
        if warn:
            warn(f"{path}: rows that do not fit the header were skipped ({str(err).strip()})")
        frame = pd.read_csv(path, on_bad_lines="skip")
    if torn is not None and len(frame):
        frame = frame.iloc[:-1]
    return tidy_metrics(frame)


def safe_yaml(text: str):
    """YAML as yaml.safe_load reads it (plain data, no tags that build objects), with libyaml's loader when
    PyYAML has it: 400 point folders' overrides and configs read in a fraction of the time."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def tidy_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The standard columns present (NaN when absent) and numeric, one row per step, sorted."""
    kinds = dict(zip(frame.columns, (dtype.kind for dtype in frame.dtypes)))  # no Series per column
    if all(kinds.get(c, "") in ("f", "i", "u") for c in CORE_COLUMNS) and kinds["step"] in "iu" \
            and frame["step"].is_monotonic_increasing and frame["step"].is_unique:  # bitnet's own CSVs: as read
        index = frame.index
        if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
            return frame  # already what reset_index would give
        return frame.reset_index(drop=True)
    # one new frame from its columns as arrays (frame-wide inserts and astype copy the whole frame each time)
    columns = {column: frame[column].to_numpy() for column in frame.columns}
    for column in CORE_COLUMNS:
        if column not in frame:
            columns[column] = np.full(len(frame), np.nan)
        elif frame[column].dtype.kind not in "fiu":  # already numbers: no parsing
            columns[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    keep = ~np.isnan(columns["step"])
    if not keep.all():
        columns = {column: values[keep] for column, values in columns.items()}
    columns = {column: np.asarray(values, dtype=float) if column in CORE_COLUMNS else values
               for column, values in columns.items()}
    columns["step"] = columns["step"].astype(int)
    frame = pd.DataFrame(columns)
    if not frame["step"].is_monotonic_increasing or frame["step"].duplicated().any():
        frame = frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
    return frame.reset_index(drop=True)


def _switch_from_csv(metrics: pd.DataFrame, column: str):
    """The step of the last stage-1 evaluation before the first stage-2 one (the row at the switch step S is
    still stage 1, see bitnet/schedules.py)."""
    stage2 = metrics.index[metrics[column] == 2]
    if len(stage2) == 0 or stage2[0] == 0:
        return None
    return int(metrics.step[stage2[0] - 1])


def load_point(folder: Path, sweep_dir: Path, warn=None) -> tuple[dict, pd.DataFrame]:
    folder = Path(folder)
    try:
        record = read_record(folder)
    except RecordError as err:
        raise NotASweep(str(err)) from None
    overrides_path = folder / HYDRA_FOLDER / OVERRIDES_FILE
    if overrides_path.exists():
        lines = read_document(overrides_path, lambda t: safe_yaml(t) or [], list, "a YAML list of overrides")
        try:
            overrides = parse_overrides([str(line) for line in lines])
        except ValueError as err:  # one line naming the file
            raise NotASweep(f"{overrides_path}: not overrides as Hydra writes them: {err}") from None
    else:  # a run folder written by bitnet.probe: its labels play the overrides' part
        overrides = dict(record.labels) if record and isinstance(record.labels, dict) else {}
    metrics = read_metrics(folder / METRICS_FILE, warn)
    return point_info(folder, sweep_dir, overrides, record, metrics), metrics


def point_info(folder: Path, sweep_dir: Path, overrides: dict, record: RunRecord | None,
               metrics: pd.DataFrame) -> dict:
    """What the tables need to know about one point, from its overrides (or labels), run.json and metrics."""
    config = _resolved_config(folder, record)
    flat = flatten(config)
    info = {"sweep": str(sweep_dir), "folder": str(folder), "status": (record.status or NO_RECORD) if record else
            NO_RECORD, "overrides": overrides}
    for key in CONFIG_COLUMNS:
        info[key] = _config_value(config, flat, key)
    info["_config"], info["_flat"] = config, flat
    record = record or RunRecord(status=NO_RECORD, switch_steps={})
    params = record.params if isinstance(record.params, dict) else {}
    switches = record.switch_steps if isinstance(record.switch_steps, dict) else {}
    unknown = []
    for kind in ("lr", "wd"):
        if kind in switches:  # as the run recorded it (bitnet.records fills it in for older records)
            info[f"{kind}_switch"] = switches[kind]
        else:  # a run measured elsewhere that does not say: its CSV's stage column, when it has one
            info[f"{kind}_switch"] = _switch_from_csv(metrics, f"{kind}_stage")
            if f"{kind}_stage" not in metrics or not metrics[f"{kind}_stage"].notna().any():
                unknown.append(kind)
    # the schedules whose switch nothing states (a CSV from other code without lr/wd labels): "no switch" is
    # then unknown, not known to be none
    info["switch_unknown"] = ",".join(unknown)
    info.update(params_total=params.get("total"), params_non_embedding=params.get("non_embedding"),
                eval_positions=record.eval_positions, eval_unique_targets=record.eval_unique_targets,
                unigram_entropy=record.unigram_entropy, ln_vocab=record.ln_vocab, last_step=record.last_step,
                total_steps=record.total_steps, error=record.error)
    return info


# ---- a sweep ----------------------------------------------------------------------------------------------
def find_point_folders(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob(OVERRIDES_FILE) if p.parent.name == HYDRA_FOLDER)


def sort_inputs(paths) -> tuple[list[Path], list[Path], list[Path]]:
    """(sweep folders, run folders, foreign CSV files or folders of them) among the paths given.

    A sweep folder holds grid.json or multirun.yaml; a run folder holds metrics.csv (one point: a single
    `python -m bitnet.run`, or a run measured by bitnet.probe and its callbacks); a folder of run folders counts
    as each of them; any other file, or a folder of .csv/.txt files, is foreign (analysis.foreign)."""
    sweeps, runs, foreign = [], [], []
    for path in map(Path, paths):
        if not path.exists():
            raise NotASweep(f"{path}: no such file or folder")
        if path.is_file():
            foreign.append(path)
        elif (path / GRID_MANIFEST).exists() or (path / SWEEP_CONFIG).exists():
            sweeps.append(path)
        elif (path / METRICS_FILE).exists():
            runs.append(path)
        elif inner := sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}")):
            runs += inner
        elif any(p.is_file() and p.suffix.lower() in FOREIGN_SUFFIXES for p in path.iterdir()):
            foreign.append(path)
        else:
            raise NotASweep(f"{path} has nothing to analyse: no multirun.yaml (a sweep folder), no metrics.csv (a run "
                            f"folder) and no {'/'.join(FOREIGN_SUFFIXES)} files in it")
    return sweeps, runs, foreign


def _load_loose(runs: list[Path], foreign: list[Path], labelling: Labelling | None,
                warnings: list[str]) -> tuple[list[str], list[tuple[dict, pd.DataFrame]]]:
    """Points from outside a sweep, run folders (labels from run.json) and foreign CSVs (analysis.foreign): the
    label keys that tell them apart and [(point info, metrics)] ordered by those keys' values. When the labels
    leave two of them alike other than by seed, each one's folder or file name becomes the key `run`, so that
    runs nothing tells apart are never averaged as if they were seeds of one cell."""
    loaded = [load_point(folder, folder.parent, warnings.append) for folder in runs]
    for run in read_foreign(foreign, labelling) if foreign else []:
        warnings += run.warnings
        metrics = tidy_metrics(run.frame)
        loaded.append((point_info(run.path, run.path.parent, run.labels, run.record, metrics), metrics))
    keys = varying_keys([info["overrides"] for info, _ in loaded])
    cells = {tuple(repr(info["overrides"].get(k)) for k in keys if k != "seed") for info, _ in loaded}
    if "seed" not in keys and len(cells) < len(loaded):
        for info, _ in loaded:
            info["overrides"]["run"] = Path(info["folder"]).name
        keys.append("run")
    loaded.sort(key=lambda p: ([_sortable(p[0]["overrides"].get(k)) for k in keys], p[0]["folder"]))
    for info, _ in loaded:
        info["in_grid"] = True
    return keys, loaded


def _fmt(value) -> str:
    return "false" if value is False else "true" if value is True else str(value)


def _sortable(value):
    if value is None or (isinstance(value, float) and value != value):
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _load_one(sweep_dir: Path, warnings: list[str]) -> tuple[list[str], list[tuple[dict, pd.DataFrame]]]:
    """One sweep folder: its varying keys and [(point info, metrics)] in grid order (grid.json's), points that
    never started included; without grid.json, the folders on disk ordered by their swept values."""
    manifest = read_manifest(sweep_dir)
    on_disk = [load_point(folder, sweep_dir, warnings.append) for folder in find_point_folders(sweep_dir)]
    if manifest is None:
        warnings.append(f"{sweep_dir}: no {GRID_MANIFEST} (a sweep made before the sweeper wrote one): only the "
                        f"point folders on disk are read, points that never started cannot be listed")
        keys = varying_keys([info["overrides"] for info, _ in on_disk])
        on_disk.sort(key=lambda p: ([_sortable(p[0]["overrides"].get(k)) for k in keys], p[0]["folder"]))
        for info, _ in on_disk:
            info["in_grid"] = True
        return keys, on_disk
    keys = varying_keys([p["overrides"] for p in manifest])
    by_folder = {Path(info["folder"]).resolve(): (info, metrics) for info, metrics in on_disk}
    loaded = []
    for point in manifest:
        found = by_folder.pop((sweep_dir / point["folder"]).resolve(), None) if point["folder"] else None
        if found is None:
            info = {"sweep": str(sweep_dir), "folder": str(sweep_dir / point["folder"]), "status": MISSING,
                    "overrides": point["overrides"], "_config": {}, "_flat": {}}
            found = (info, read_metrics(Path("/nonexistent")))
        found[0]["in_grid"] = True
        loaded.append(found)
    for info, metrics in by_folder.values():
        warnings.append(f"{info['folder']}: on disk but not in {sweep_dir}/{GRID_MANIFEST} (kept)")
        info["in_grid"] = False
        loaded.append((info, metrics))
    return keys, loaded


def load_sweeps(sweep_dirs, *, warn=None, labelling: Labelling | None = None) -> Sweep:
    """Load sweep folders, run folders and foreign CSVs (`sort_inputs`; `labelling`: how foreign CSVs map and
    are labelled, analysis.foreign). `warn` (e.g. print) hears about oddities such as points on disk that are
    not in the grid or torn CSV lines; they are also kept in Sweep.warnings."""
    if isinstance(sweep_dirs, (str, Path)):
        sweep_dirs = [sweep_dirs]
    if not sweep_dirs:
        raise NotASweep("no sweep folder given")
    sweeps, runs, foreign = sort_inputs(sweep_dirs)
    swept, infos, frames, warnings = [], [], [], []
    loose = [_load_loose(runs, foreign, labelling, warnings)] if runs or foreign else []
    for keys, loaded in loose + [_load_one(sweep_dir, warnings) for sweep_dir in sweeps]:
        swept += [k for k in keys if k not in swept]
        for info, metrics in loaded:
            infos.append(info)
            frames.append(metrics)
    if not infos:
        raise NotASweep(f"{', '.join(map(str, sweep_dirs))}: no grid points found (no {GRID_MANIFEST} and no "
                        f"point folders)")

    # A swept config group named like a metrics column (lr, wd) gets its `.name` column: the group's value is
    # its name, and `lr` / `wd` stay the CSV's learning rate and weight decay.
    column_of = {k: f"{k}.name" if k in CORE_COLUMNS else k for k in swept}
    rows = []
    for info in infos:
        row = {}
        # A swept key reads from the point's own override; a point of another sweep that did not sweep that
        # key takes its resolved config value, so sweeps of the same grid pool.
        for key in swept:
            row[column_of[key]] = info["overrides"][key] if key in info["overrides"] else _config_value(
                info["_config"], info["_flat"], key)
        for key in CONFIG_COLUMNS + RECORD_COLUMNS:
            if key not in row:
                row[key] = info.get(key)
        label = ",".join(f"{k}={_fmt(row[column_of[k]])}" for k in swept) or Path(info["folder"]).name
        rows.append({"sweep": info["sweep"], "point": label, "folder": info["folder"], "status": info["status"],
                     "in_grid": info["in_grid"], **row})
    points = pd.DataFrame(rows)
    if points.duplicated(["sweep", "point"]).any():  # e.g. leftovers outside the grid: fall back to folder names
        points["point"] = [Path(f).name or p for f, p in zip(points.folder, points.point)]
    points["n_rows"] = [len(m) for m in frames]
    points["reached_step"] = [int(m.step.max()) if len(m) else None for m in frames]
    configs = {(s, p): info["_flat"] for s, p, info in zip(points.sweep, points.point, infos)}

    # each point's columns repeated over its metric rows (a point without metrics keeps one row of NaN metrics,
    # so that it stays visible), beside all the metric rows: one concat, not one insert per column and point
    frames = [m if len(m) else pd.DataFrame({c: [float("nan")] for c in m.columns}) for m in frames]
    repeated = points.loc[points.index.repeat([len(m) for m in frames])].reset_index(drop=True)
    metrics = pd.concat(frames, ignore_index=True)
    frame = pd.concat([repeated, metrics.drop(columns=[c for c in metrics.columns if c in repeated])], axis=1)
    for message in warnings:
        if warn:
            warn(message)
    return Sweep(frame=frame, points=points, swept=[column_of[k] for k in swept], warnings=warnings, configs=configs)


def load(sweep_dirs) -> pd.DataFrame:
    """The tidy frame alone: one row per (point, step)."""
    return load_sweeps(sweep_dirs).frame
