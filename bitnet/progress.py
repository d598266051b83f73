"""What a sweep tells its user: while it runs, which point of how many starts now and about how long the rest
will take; at the end, where the results are, how the points ended and the command that analyses them.

Both read the sweep folder (grid.json and each point's run.json), so they say the same whichever launcher ran
the points and whether or not some points finished in an earlier launch of the same sweep.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from bitnet.records import FINISHED_STATUSES, GRID_MANIFEST, read_record


def grid_folders(sweep_dir: Path) -> list[Path]:
    """The point folders of the sweep in launch order, from grid.json; [] when there is none."""
    path = Path(sweep_dir) / GRID_MANIFEST
    if not path.exists():
        return []
    return [Path(sweep_dir) / point["folder"] for point in json.loads(path.read_text()).get("points") or []]


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def point_banner(sweep_dir: Path, job_num: int, at_once: int = 1) -> str | None:
    """`point k of n (folder)`, and an ETA once a point has finished: the points not finished yet times the
    mean training time of the finished ones (run.json `elapsed_s`), divided by the points that run at once.
    Points differ in size, so it is a rough figure, and it says what it is computed from. None without
    grid.json."""
    folders = grid_folders(sweep_dir)
    if not folders or not 0 <= job_num < len(folders):
        return None
    line = f"point {job_num + 1} of {len(folders)} ({folders[job_num].name})"
    records = [read_record(folder) for folder in folders]
    times = [r.elapsed_s for r in records if r and r.status in FINISHED_STATUSES and r.elapsed_s]
    to_go = sum(not r or r.status not in FINISHED_STATUSES for r in records)  # this one included
    if times and to_go:
        mean = sum(times) / len(times)
        parallel = f", {at_once} at a time" if at_once > 1 else ""
        line += (f"; about {_duration(mean * to_go / at_once)} left ({to_go} point(s) to go x "
                 f"{_duration(mean)}, the mean training time of the {len(times)} finished{parallel})")
    return line


OUTCOMES = ("completed", "diverged", "failed", "interrupted", "skipped")


def sweep_summary(sweep_dir: Path, outcomes: list[str]) -> str:
    """The lines printed when a sweep ends. `outcomes` holds one of OUTCOMES per launched point: its run.json
    status, or `skipped` for a point finished in an earlier launch or being trained by another process."""
    counts = ", ".join(f"{outcomes.count(word)} {word}" for word in OUTCOMES)
    folder = Path(sweep_dir).resolve()
    return (f"sweep finished, {len(outcomes)} point(s): {counts} (skipped: finished in an earlier launch, or "
            f"another process is training it)\n"
            f"results: {folder}\n"
            f"analyse it: python -m analysis.tables {shlex.quote(str(folder))}\n"
            f"diagnose each run (is it collapsing, and why?): bitnet-diagnose {shlex.quote(str(folder))}")
