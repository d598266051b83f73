"""A Hydra sweeper that checks every grid point before it launches any, and lets a sweep finish even when a
point fails.

Hydra's basic sweeper composes each point's config but runs no checks of ours, so a bad point is found
only when its job starts, possibly hours into a sweep, after other points trained. `ValidatingSweeper`
behaves like the basic sweeper (same grid syntax, `hydra.sweeper.params`, `max_batch_size`) except that:

- before launching anything it loads the config of every grid point and runs `bitnet.validate.validate` on
  it; if any point is invalid it prints one line per bad point to stderr (`error: grid point 3 of 8
  (hidden=30 ...): <message>`) and exits 2 with nothing launched, trained or written;
- each point's folder is named by the keys that vary across the grid (`hidden=256`), not by every fixed
  override on the command line (`data.seq_len=32,...,hidden=256,...`), so folders stay readable; the same
  command always gives the same names, which is what resuming a sweep relies on;
- a failed point (an exception in its job) no longer stops later batches: every batch runs, then the sweep
  reports the failed points and exits non-zero. Each point's results live in its own folder either way;
- when the sweep folder already holds point folders under names this grid will not use (a key was added to or
  dropped from the swept ones, which renames every point), it says so on stderr before launching.

The device check is skipped for launchers whose jobs run on other machines (submitit_slurm): the machine
that submits a SLURM array often has no GPU.

Hydra instantiates sweepers only from the `hydra_plugins` namespace, so the class is exposed to it as
`hydra_plugins.bitnet_sweeper.validating_sweeper.ValidatingSweeper` (a subclass with no code of its own),
which conf/config.yaml selects with `hydra.sweeper._target_`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, List, Sequence

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict, read_write

from bitnet.records import GRID_MANIFEST, RECORD_FILE, SWEEP_CONFIG, atomic_file, point_folder

log = logging.getLogger(__name__)

MAX_REPORTED = 10  # bad points printed one per line; the rest are counted


def _outside(subdir: str, sweep_dir: Path) -> str | None:
    """Why a point folder `subdir` is not one safe folder directly in `sweep_dir` (None when it is)."""
    if subdir in ("", ".", "..") or Path(subdir).name != subdir or "\0" in subdir:
        return "it is not a single folder name"
    if len(subdir.encode()) > 255:
        return f"it is {len(subdir.encode())} bytes long, and file systems allow 255"
    if (sweep_dir / subdir).resolve().parent != sweep_dir.resolve():
        return "it leads out of the sweep folder"
    return None


def _is_remote(launcher_target: str) -> bool:
    return "slurm" in launcher_target.lower()


class ValidatingSweeper(BasicSweeper):
    """BasicSweeper + validation of every grid point up front + failures reported after all batches."""

    def _varying_keys(self, points: Sequence[Sequence[str]]) -> set[str]:
        values: dict[str, set[str]] = {}
        for point in points:
            for override in point:
                key, _, value = override.partition("=")
                values.setdefault(key, set()).add(value)
        return {key for key, seen in values.items() if len(seen) > 1}

    def name_points_by_varying_keys(self, points: Sequence[Sequence[str]]) -> None:
        """Exclude the overrides every point shares from the folder names (hydra.job.override_dirname). With
        nothing varying (a one-point grid) Hydra's naming is kept, so a point never lands in the sweep root."""
        def bare(key: str) -> str:
            return key.lstrip("+~")

        varying = {bare(key) for key in self._varying_keys(points)}
        if not varying:
            return
        shared = {bare(o.partition("=")[0]) for point in points for o in point} - varying
        assert self.config is not None
        settings = self.config.hydra.job.config.override_dirname
        exclude = sorted(set(settings.exclude_keys) | shared)
        with read_write(self.config), open_dict(self.config):
            settings.exclude_keys = exclude  # what multirun.yaml records (the analysis reads it)
            # Each job's config is composed again from these overrides, so the setting has to travel as one.
            self.config.hydra.overrides.hydra.append(
                f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]")

    def compose_points(self, points: Sequence[Sequence[str]]) -> list:
        """Every point's composed config, once (after `name_points_by_varying_keys`: the folder names are part of
        it), for `validate_points` and `point_folders` alike."""
        assert self.hydra_context is not None and self.config is not None
        return [self.hydra_context.config_loader.load_sweep_config(self.config, list(point)) for point in points]

    def validate_points(self, points: Sequence[Sequence[str]], configs: list) -> None:
        """Validate every point's composed config; on any error print one line per bad point and exit 2."""
        from bitnet.validate import ConfigError, validate

        assert self.config is not None
        launcher = str(OmegaConf.select(self.config, "hydra.launcher._target_", default="") or "")
        check_device = not _is_remote(launcher)
        varying = self._varying_keys(points)
        cache: dict = {}
        bad = []
        tic = time.perf_counter()
        for number, (point, config) in enumerate(zip(points, configs)):
            try:
                validate(config, device=check_device, cache=cache)
            except ConfigError as err:
                shown = [o for o in point if o.partition("=")[0] in varying] or list(point)
                bad.append(f"error: grid point {number + 1} of {len(points)} ({' '.join(shown)}) is invalid, "
                           f"nothing was launched: {err}")
        log.debug(f"Validated {len(points)} grid points in {time.perf_counter() - tic:.2f}s")
        if bad:
            for line in bad[:MAX_REPORTED]:
                print(line, file=sys.stderr)
            if len(bad) > MAX_REPORTED:
                print(f"error: ... and {len(bad) - MAX_REPORTED} more invalid grid points", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(2)

    def point_folders(self, points: Sequence[Sequence[str]], configs: list, sweep_dir: Path) -> list[dict]:
        """Every point in launch order with its overrides and its folder (relative to the sweep folder), as
        Hydra composes them for the job. A folder that is not one folder directly inside the sweep folder (a
        custom hydra.sweep.subdir with `..` or `/`) is refused, one line per point, exit 2, before anything is
        written: Hydra would write the point's .hydra/ files there, possibly into another run's folder."""
        entries, bad = [], []
        for number, (point, config) in enumerate(zip(points, configs)):
            with open_dict(config):
                config.hydra.job.num = number  # a subdir may name the job number; the launcher sets it the same way
            folder = str(OmegaConf.select(config, "hydra.sweep.subdir"))
            why = _outside(folder, sweep_dir)
            if why:
                bad.append(f"error: grid point {number + 1} of {len(points)} ({' '.join(point)}) is refused, nothing "
                           f"was launched: its folder hydra.sweep.subdir={folder!r} is not allowed: {why}; point "
                           f"folders are single names inside hydra.sweep.dir")
            entries.append({"overrides": list(point), "folder": folder})
        if bad:
            print("\n".join(bad[:MAX_REPORTED]), file=sys.stderr)
            sys.stderr.flush()
            sys.exit(2)
        return entries

    def write_grid_manifest(self, entries: list[dict], sweep_dir: Path) -> None:
        """grid.json: `point_folders`, so that the analysis can list points that never started without
        re-deriving Hydra's grid expansion or folder naming. Rewritten only when the grid changed."""
        text = json.dumps({"points": entries}, indent=1) + "\n"
        path = sweep_dir / GRID_MANIFEST
        if not path.exists() or path.read_text() != text:  # a rerun of the same sweep leaves it untouched
            with atomic_file(path) as handle:
                handle.write(text)

    def warn_about_renamed_points(self, points: Sequence[Sequence[str]], sweep_dir: Path) -> None:
        """Say, before launching, when the sweep folder holds points under names this grid will not use.

        Folders are named by the keys that vary, so adding a swept key (`hidden=32,64`, then `hidden=32,64
        seed=0,1`) renames every point: `hidden=32` becomes `hidden=32,seed=0`, which has no results, and is
        trained again instead of being skipped. The old folders are left as they are."""
        assert self.config is not None
        if not sweep_dir.is_dir():
            return
        if OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir") != \
                "${point_folder:${hydra.job.override_dirname}}":
            return  # a custom naming: nothing to compare with
        settings = self.config.hydra.job.config.override_dirname
        parser = OverridesParser.create()
        new_names = {point_folder(get_overrides_dirname(parser.parse_overrides(list(point)), list(settings.exclude_keys),
                                                        settings.item_sep, settings.kv_sep)) for point in points}
        old_names = sorted(p.parent.name for p in sweep_dir.glob(f"*/{RECORD_FILE}"))
        renamed = [name for name in old_names if name not in new_names]
        if renamed:
            varying = ", ".join(sorted(self._varying_keys(points))) or "none"
            shown = ", ".join(renamed[:3]) + (f" and {len(renamed) - 3} more" if len(renamed) > 3 else "")
            print(f"warning: {sweep_dir} holds {len(renamed)} point folder(s) that this grid does not name "
                  f"({shown}); folders are named by the keys that vary across the grid (now: {varying}), so a "
                  f"point of this grid trained there before under another name is trained again, not skipped; "
                  f"the old folders stay as they are", file=sys.stderr)
            sys.stderr.flush()

    def launch_settings_error(self, overrides) -> str | None:
        """One line on a sweep setting that Hydra or the launcher would fail on only with a traceback, possibly
        after writing the sweep folder (None when all is well)."""
        from bitnet.devices import JOBLIB_TARGET

        assert self.config is not None
        for override in overrides:
            if override.value_type == ValueType.INTERVAL_SWEEP:  # Hydra's basic sweeper cannot expand it
                return (f"{override.input_line}: this sweeper takes lists (a,b,c), range() and choice(); "
                        f"interval() and other sampled sweeps need a sampling sweeper (e.g. Optuna's)")
        if self.max_batch_size is not None and (not isinstance(self.max_batch_size, int) or self.max_batch_size < 1):
            return (f"hydra.sweeper.max_batch_size={self.max_batch_size}: must be a positive integer (points "
                    f"launched at a time) or null (all at once)")
        launcher = OmegaConf.select(self.config, "hydra.launcher", default=None) or {}
        target = str(launcher.get("_target_", ""))
        if target == JOBLIB_TARGET and launcher.get("n_jobs") == 0:
            return ("hydra.launcher.n_jobs=0: must be a number of jobs at once (1, 2, ...) or negative, counted "
                    "from the cores (-1: one per core)")
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if "SlurmLauncher" in target and missing:  # submitit needs both, and fails after grid.json is written
            return (f"hydra/launcher=slurm: SLURM is not available on this machine (no {' or '.join(missing)} "
                    f"command); submit from the cluster's login node, or use hydra/launcher=local_parallel here")
        return None

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(params_conf)
        problem = self.launch_settings_error(overrides)
        if problem:
            print(f"error: {problem}", file=sys.stderr)  # before anything is launched or written
            sys.stderr.flush()
            sys.exit(2)
        self.overrides = self.split_arguments(overrides, self.max_batch_size)

        # Every point, before anything is launched or written.
        points = [point for batch in self.overrides for point in batch]
        self.name_points_by_varying_keys(points)
        configs = self.compose_points(points)
        self.validate_points(points, configs)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        folders = self.point_folders(points, configs, sweep_dir)
        self.warn_about_renamed_points(points, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / SWEEP_CONFIG)
        self.write_grid_manifest(folders, sweep_dir)

        returns: List[Sequence[JobReturn]] = []
        failed: list[JobReturn] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            # Unlike BasicSweeper, a failed point does not stop the later batches: they run, then we report.
            failed.extend(r for r in results if r.status == JobStatus.FAILED)
            initial_job_idx += len(batch)
            returns.append(results)

        from bitnet.progress import sweep_summary

        outcomes = ["failed" if r.status == JobStatus.FAILED else str(r._return_value) for r in
                    (result for batch in returns for result in batch)]
        print(sweep_summary(sweep_dir, outcomes), flush=True)
        if failed:
            for result in failed:
                overrides = " ".join(result.overrides or [])
                log.error(f"grid point failed ({overrides}): {type(result._return_value).__name__}: "
                          f"{result._return_value}")
            log.error(f"{len(failed)} of {initial_job_idx} grid points failed; the others' results are in "
                      f"{sweep_dir}. Rerun the same command to retry the failed ones (finished points are "
                      f"skipped).")
            _ = failed[0].return_value  # raises the first failure, as BasicSweeper does: non-zero exit
        return returns
