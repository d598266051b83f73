"""How fast the analysis is at the size of a real sweep: `python -m analysis bench [--points 400] [--rows 100]`
(also `python -m analysis.bench`).

Builds a synthetic sweep in a temporary folder from one real point of the committed results (its run.json,
.hydra record and metrics.csv, the CSV stretched to `--rows` evaluations by interpolating every numeric column
over the step), as many points as asked over hidden x lr.peak x seed, with the grid.json and multirun.yaml the
sweeper writes. Then it times, in this process and after one warm-up pass:

  pandas   reading every point's metrics.csv with pandas.read_csv and concatenating them: the floor
  load     analysis.load_sweeps (grid, overrides, run.json, CSVs -> one frame)
  tables   load + analysis.core.analyse (every table and verdict)
  plots    analysis.plots.save_plots: drawing and writing the PNGs of that Analysis (with --plots; the tables'
           time not included)

and prints seconds per point and each figure's ratio to the pandas floor. `--profile N` prints the N functions
with the most cumulative time in one `tables` pass. Figures, not assertions: the machine's load moves them.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bitnet.records import (CONFIG_FILE, GRID_MANIFEST, HYDRA_FOLDER, METRICS_FILE, OVERRIDES_FILE, RECORD_FILE,
                            SWEEP_CONFIG, read_record)

SOURCE = Path(__file__).resolve().parent.parent / "results" / "forensics_study" / "seed=0,suspect=faithful"


def stretched(metrics: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The CSV at `rows` evenly spaced steps over the same span, numeric columns interpolated, the rest as the
    nearest earlier row (stage columns stay whole numbers)."""
    steps = np.linspace(metrics.step.min(), metrics.step.max(), rows).round().astype(int)
    out = pd.DataFrame({"step": steps})
    for column in metrics.columns.drop("step"):
        values = pd.to_numeric(metrics[column], errors="coerce")
        if values.notna().sum() >= 2:
            known = values.notna()
            out[column] = np.interp(steps, metrics.step[known], values[known])
        else:
            out[column] = float("nan")
    for column in ("unique_tokens", "unique_targets", "lr_stage", "wd_stage", "tokens_seen"):
        if column in out:
            out[column] = out[column].round()
    return out


def build_sweep(dest: Path, points: int, rows: int, source: Path = SOURCE) -> Path:
    """A sweep folder of `points` copies of `source` (hidden x lr.peak x seed), each CSV `rows` long."""
    record = read_record(source).to_json()
    metrics = stretched(pd.read_csv(source / METRICS_FILE), rows)
    config = yaml.safe_load((source / HYDRA_FOLDER / CONFIG_FILE).read_text())
    hiddens, peaks = [32, 48, 64, 96, 128], [5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 4e-3, 6e-3, 8e-3]
    grid = [(h, p, s) for s in range(max(1, -(-points // (len(hiddens) * len(peaks)))))
            for h in hiddens for p in peaks][:points]
    manifest = []
    for hidden, peak, seed in grid:
        overrides = [f"hidden={hidden}", f"lr.peak={peak}", f"seed={seed}"]
        folder = dest / ",".join(overrides)
        (folder / HYDRA_FOLDER).mkdir(parents=True)
        point_config = {**config, "hidden": hidden, "seed": seed, "lr": {**config["lr"], "peak": peak}}
        (folder / HYDRA_FOLDER / OVERRIDES_FILE).write_text(yaml.safe_dump(overrides))
        (folder / HYDRA_FOLDER / CONFIG_FILE).write_text(yaml.safe_dump(point_config))
        (folder / RECORD_FILE).write_text(json.dumps({**record, "config": point_config}))
        metrics.to_csv(folder / METRICS_FILE, index=False)
        manifest.append({"overrides": overrides, "folder": folder.name})
    (dest / GRID_MANIFEST).write_text(json.dumps({"points": manifest}))
    (dest / SWEEP_CONFIG).write_text(yaml.safe_dump({"hydra": {"overrides": {"task": []}}}))
    return dest


def read_with_pandas(sweep: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(sweep.glob(f"*/{METRICS_FILE}"))], ignore_index=True)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=400, help="grid points (default %(default)s)")
    p.add_argument("--rows", type=int, default=100, help="evaluations per point (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is shown (default %(default)s)")
    p.add_argument("--plots", action="store_true", help="also time the plots")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the N most expensive functions")
    args = p.parse_args(argv)

    from analysis.core import analyse
    from analysis.load import load_sweeps
    from analysis.plots import save_plots

    with tempfile.TemporaryDirectory() as tmp:
        sweep = build_sweep(Path(tmp) / "sweep", args.points, args.rows)
        out = Path(tmp) / "analysis"

        def tables():
            return analyse(load_sweeps(sweep))

        analysis = tables()  # also the warm-up: imports inside the analysis, file cache

        def plots():
            out.mkdir()
            save_plots(analysis, out)
            shutil.rmtree(out)

        steps = {"pandas": lambda: read_with_pandas(sweep), "load": lambda: load_sweeps(sweep), "tables": tables}
        if args.plots:
            steps["plots"] = plots
        best = {name: min(timed(step) for _ in range(args.repeat)) for name, step in steps.items()}
        print(f"{args.points} points x {args.rows} rows (copies of {SOURCE.parent.name}/{SOURCE.name}), best of "
              f"{args.repeat}:\n")
        print("| step | seconds | ms per point | x pandas |\n|---|---:|---:|---:|")
        for name, seconds in best.items():
            print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.points:.1f} | {seconds / best['pandas']:.1f} |")
        if args.plots:
            print(f"\ntables + plots: {best['tables'] + best['plots']:.2f} s")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(tables)
            print()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
