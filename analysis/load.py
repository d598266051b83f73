"""Sweep folders -> one tidy pandas DataFrame, one row per (grid point, step).

A sweep folder is what `python -m bitnet.run -m ...` leaves: `multirun.yaml` plus one folder per grid point
holding `.hydra/overrides.yaml`, `run.json` and `metrics.csv`. Every point of the grid gets rows, whatever its
state: the grid is re-expanded from multirun.yaml, so a point that never started is listed as `missing`
instead of silently vanishing from the tables.

    from analysis.load import load_sweeps
    sweep = load_sweeps(["multirun/2026-01-01/12-00-00"])
    sweep.frame    # one row per (point, step): swept keys, config values, status, metrics
    sweep.points   # one row per point
    sweep.swept    # the swept keys' columns, e.g. ["hidden", "seed"]; a swept group lr / wd is "lr.name" /
                   # "wd.name" (the CSV's lr and wd columns keep the learning rate and weight decay)
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from bitnet.records import CORE_COLUMNS, FINISHED_STATUSES

# Point statuses: the run statuses of bitnet/records.py (FINISHED_STATUSES: done), plus two that only the
# loader can see.
MISSING = "missing"      # in multirun.yaml's grid, no folder on disk
NO_RECORD = "no_record"  # folder made by Hydra, but no run.json (starting, or rejected before training: see run.log)
# Resolved config values worth a column even when not swept: they tell cells apart when several sweeps are
# loaded together and they label the switches.
CONFIG_COLUMNS = ["hidden", "seed", "model.layers", "model.n_heads", "model.quant", "model.quantize_head",
                  "lr.name", "lr.peak", "lr.switch_step", "lr.stage2_peak", "wd.name", "wd.value",
                  "wd.switch_step", "wd.stage2_value", "train.steps", "train.batch_size", "train.label_smoothing",
                  "train.grad_clip", "data.name", "data.vocab_size", "data.seq_len"]
RECORD_COLUMNS = ["params_total", "params_non_embedding", "eval_positions", "eval_unique_targets", "unigram_entropy",
                  "lr_switch", "wd_switch", "last_step", "total_steps", "error"]


class NotASweep(ValueError):
    """The folder is not a Hydra sweep folder (or does not exist)."""


@dataclass
class Sweep:
    frame: pd.DataFrame                         # one row per (point, step)
    points: pd.DataFrame                        # one row per point
    swept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> pd.DataFrame:
        return self.points[self.points.status == MISSING]

    @property
    def unfinished(self) -> pd.DataFrame:
        """Points that are not completed or diverged: missing, no_record, running, failed."""
        return self.points[~self.points.status.isin(FINISHED_STATUSES)]


# ---- overrides --------------------------------------------------------------------------------------------
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _key(override) -> str:
    return override.key_or_group if not override.package else f"{override.key_or_group}@{override.package}"


def parse_overrides(lines: list[str]) -> dict:
    """['hidden=32', 'lr=two_stage'] -> {'hidden': 32, 'lr': 'two_stage'}, values typed as Hydra types them."""
    return {_key(o): o.value() for o in _parser().parse_overrides(list(lines)) if not o.is_delete()}


def expand_grid(multirun: dict) -> tuple[list[str], list[dict]]:
    """The swept keys and one {key: value} per grid point, as Hydra's BasicSweeper expands
    hydra.sweeper.params then the command line's task overrides (a later one replaces an earlier one)."""
    hydra = multirun.get("hydra") or {}
    lines = [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
    lines += list((hydra.get("overrides") or {}).get("task") or [])
    parser = _parser()
    overrides = {}
    for override in parser.parse_overrides(lines):
        overrides[_key(override)] = override
    swept, choices = [], []
    for key, override in overrides.items():
        if override.is_sweep_override():
            swept.append(key)
            values = [parser.parse_override(f"x={s}").value() for s in override.sweep_string_iterator()]
            choices.append(values)
    return swept, [dict(zip(swept, combo)) for combo in itertools.product(*choices)]


def _expected_folder(multirun: dict, point: dict) -> str:
    """Where Hydra would have put a missing point, when the subdir is the override_dirname (our config)."""
    hydra = multirun.get("hydra") or {}
    if (hydra.get("sweep") or {}).get("subdir") != "${hydra.job.override_dirname}":
        return ""
    settings = ((hydra.get("job") or {}).get("config") or {}).get("override_dirname") or {}
    exclude = set(settings.get("exclude_keys") or [])
    lines = []
    for override in _parser().parse_overrides(list((hydra.get("overrides") or {}).get("task") or [])):
        key = _key(override)
        if key in exclude:
            continue
        if key in point:
            prefix = override.input_line.split("=", 1)[0]
            lines.append(f"{prefix}={_fmt(point[key])}")
        else:
            lines.append(override.input_line)
    lines.sort()
    return re.sub("=", settings.get("kv_sep", "="), settings.get("item_sep", ",").join(lines))


def _fmt(value) -> str:
    return "false" if value is False else "true" if value is True else str(value)


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


def _resolved_config(folder: Path, record: dict | None) -> dict:
    if record and isinstance(record.get("config"), dict):
        return record["config"]
    path = folder / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception:  # an unresolvable interpolation: fall back to the raw values
        return yaml.safe_load(path.read_text()) or {}


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv with the standard columns always present (NaN when absent), extra columns kept, numbers
    coerced (a torn last line from a killed run reads as NaN and is dropped)."""
    try:
        frame = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        frame = pd.DataFrame()
    for column in CORE_COLUMNS:
        if column not in frame:
            frame[column] = float("nan")
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["step"])
    frame["step"] = frame["step"].astype(int)
    return frame.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def _switch_from_csv(metrics: pd.DataFrame, column: str):
    """The step of the last stage-1 evaluation before the first stage-2 one (the row at the switch step S is
    still stage 1, see bitnet/schedules.py)."""
    stage2 = metrics.index[metrics[column] == 2]
    if len(stage2) == 0 or stage2[0] == 0:
        return None
    return int(metrics.step[stage2[0] - 1])


def load_point(folder: Path, sweep_dir: Path) -> tuple[dict, pd.DataFrame]:
    folder = Path(folder)
    overrides_path = folder / ".hydra" / "overrides.yaml"
    overrides = parse_overrides(yaml.safe_load(overrides_path.read_text()) or []) if overrides_path.exists() else {}
    record_path = folder / "run.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    metrics = read_metrics(folder / "metrics.csv")
    config = _resolved_config(folder, record)
    flat = flatten(config)
    info = {"sweep": str(sweep_dir), "folder": str(folder), "status": record.get("status", NO_RECORD) if record else NO_RECORD,
            "overrides": overrides}
    for key in CONFIG_COLUMNS:
        info[key] = _config_value(config, flat, key)
    info["_config"], info["_flat"] = config, flat
    record = record or {}
    params = record.get("params") or {}
    switches = record.get("switch_steps")
    for kind in ("lr", "wd"):
        if isinstance(switches, dict) and kind in switches:
            info[f"{kind}_switch"] = switches[kind]
        else:  # an older or absent run.json: read the switch off the CSV's stage column
            info[f"{kind}_switch"] = _switch_from_csv(metrics, f"{kind}_stage")
    info.update(params_total=params.get("total"), params_non_embedding=params.get("non_embedding"),
                eval_positions=record.get("eval_positions"), eval_unique_targets=record.get("eval_unique_targets"),
                unigram_entropy=record.get("unigram_entropy"),
                last_step=record.get("last_step"), total_steps=record.get("total_steps"),
                error=record.get("error"))
    return info, metrics


# ---- a sweep ----------------------------------------------------------------------------------------------
def find_point_folders(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in Path(sweep_dir).rglob("overrides.yaml") if p.parent.name == ".hydra")


def check_sweep_dir(sweep_dir: Path) -> Path:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NotASweep(f"{sweep_dir}: no such folder")
    if not (sweep_dir / "multirun.yaml").exists():
        if (sweep_dir / ".hydra").is_dir():
            raise NotASweep(f"{sweep_dir} is a single run's folder, not a sweep: pass the folder holding "
                            f"multirun.yaml (the hydra.sweep.dir of a `-m` run)")
        raise NotASweep(f"{sweep_dir} is not a sweep folder: no multirun.yaml in it (pass the hydra.sweep.dir "
                        f"of a `python -m bitnet.run -m ...` run)")
    return sweep_dir


def _matches(overrides: dict, point: dict) -> bool:
    return all(key in overrides and overrides[key] == value for key, value in point.items())


def _sortable(value):
    if value is None or (isinstance(value, float) and value != value):
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def load_sweeps(sweep_dirs, *, warn=None) -> Sweep:
    """Load one or more sweep folders. `warn` (e.g. print) hears about oddities such as points on disk that
    are not in multirun.yaml's grid; they are also kept in Sweep.warnings."""
    if isinstance(sweep_dirs, (str, Path)):
        sweep_dirs = [sweep_dirs]
    if not sweep_dirs:
        raise NotASweep("no sweep folder given")
    swept, infos, frames, warnings = [], [], [], []
    for sweep_dir in map(check_sweep_dir, sweep_dirs):
        multirun = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
        keys, grid = expand_grid(multirun)
        swept += [k for k in keys if k not in swept]
        loaded = []
        for folder in find_point_folders(sweep_dir):
            info, metrics = load_point(folder, sweep_dir)
            info["in_grid"] = any(_matches(info["overrides"], p) for p in grid) if grid else True
            if not info["in_grid"]:
                warnings.append(f"{folder}: on disk but not in {sweep_dir}/multirun.yaml's grid (kept)")
            loaded.append((info, metrics))
        for point in grid:
            if not any(_matches(info["overrides"], point) for info, _ in loaded):
                expected = _expected_folder(multirun, point)
                info = {"sweep": str(sweep_dir), "folder": str(sweep_dir / expected) if expected else "",
                        "status": MISSING, "overrides": dict(point), "in_grid": True, "_config": {}, "_flat": {}}
                loaded.append((info, read_metrics(Path("/nonexistent"))))
        for info, metrics in loaded:
            infos.append(info)
            frames.append(metrics)
    if not infos:
        raise NotASweep(f"{', '.join(map(str, sweep_dirs))}: no grid points found (empty multirun.yaml and no "
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
    # Grid order: by the swept keys' values (numbers as numbers), then folder.
    order = sorted(range(len(rows)), key=lambda i: ([_sortable(rows[i].get(column_of[k])) for k in swept], rows[i]["folder"]))
    rows, frames = [rows[i] for i in order], [frames[i] for i in order]
    points = pd.DataFrame(rows)
    if points.duplicated(["sweep", "point"]).any():  # e.g. leftovers outside the grid: fall back to folder names
        points["point"] = [Path(f).name or p for f, p in zip(points.folder, points.point)]
    points["n_rows"] = [len(m) for m in frames]
    points["reached_step"] = [int(m.step.max()) if len(m) else None for m in frames]

    tidy = []
    for (_, point), metrics in zip(points.iterrows(), frames):
        if metrics.empty:  # keep the point visible: one row with no metrics
            metrics = pd.DataFrame({c: [float("nan")] for c in metrics.columns})
        block = metrics.copy()
        for column in reversed(points.columns):
            block.insert(0, column, [point[column]] * len(block))
        tidy.append(block)
    frame = pd.concat(tidy, ignore_index=True)
    for message in warnings:
        if warn:
            warn(message)
    return Sweep(frame=frame, points=points, swept=[column_of[k] for k in swept], warnings=warnings)


def load(sweep_dirs) -> pd.DataFrame:
    """The tidy frame alone: one row per (point, step)."""
    return load_sweeps(sweep_dirs).frame
