"""Wall time of the default run (`bitnet train.steps=100`) under each CPU thread setting, idle and with one
core kept busy by another process, measured side by side: every round runs each setting once, in a rotated
order, so the load from other processes falls on all of them alike. Prints one row per setting and
condition with the median (and range) over the rounds.

    python benchmarks/threads.py --rounds 3            # from a checkout, or with the package installed

Each run is a fresh process (`python -m bitnet.run`), as a user would start it; the tokenizer is trained once
before the timed runs. "all" is every core this process may use; OMP_WAIT_POLICY is libgomp's setting of
how idle worker threads wait (ACTIVE spins, PASSIVE sleeps; unset lets libgomp spin for a while first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitnet.records import read_record

# OMP_WAIT_POLICY only matters with worker threads, so not for 1 thread; on a 2-core machine "all" is 2.
SETTINGS = [("1", None), ("2", None), ("2", "PASSIVE"), ("all", None), ("all", "PASSIVE")]


def one_run(work: Path, name: str, threads: str, policy: str | None, steps: int,
            limit: float | None = None) -> tuple[float, float]:
    """(process wall seconds, training seconds from run.json) of one `python -m bitnet.run` run; a run still
    going after `limit` seconds is stopped and counted as (inf, inf): slower than the limit."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    folder = work / name
    command = [sys.executable, "-m", "bitnet.run", f"train.steps={steps}", "progress=false",
               f"threads={'null' if threads == 'all' else threads}", f"hydra.run.dir={folder}"]
    tic = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return float("inf"), float("inf")
    if result.returncode:
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    wall = time.perf_counter() - tic
    return wall, read_record(folder).elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=None, help="stop a run after this many seconds")
    parser.add_argument("--threads", nargs="*", default=None, help="only these settings of threads (1 2 all)")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bitnet-threads-"))
    os.environ.setdefault("BITNET_CACHE", str(work / "cache"))
    one_run(work, "warmup", "1", None, args.steps)  # trains and caches the tokenizer; not timed
    settings = [s for s in SETTINGS if args.threads is None or s[0] in args.threads]
    times: dict[tuple, list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for condition in ("idle", "loaded"):
            busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "loaded" else None)
            try:
                shift = round_ % len(settings)
                for threads, policy in settings[shift:] + settings[:shift]:
                    name = f"r{round_}-{condition}-{threads}-{policy or 'default'}"
                    result = one_run(work, name, threads, policy, args.steps, args.limit)
                    times.setdefault((condition, threads, policy), []).append(result)
                    print(f"# {name}: {result[0]:.1f} s wall, {result[1]:.1f} s training", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
        table(times, args)


def table(times: dict, args) -> None:
    """The medians so far (printed after every round, so a long benchmark cut short still reports)."""
    print(f"\ncores: {len(os.sched_getaffinity(0))}; {max(map(len, times.values()))} round(s); "
          f"train.steps={args.steps}; "
          f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print(f"(inf: stopped after --limit {args.limit} s)" if args.limit else "")
    print("| condition | threads | OMP_WAIT_POLICY | wall s (median) | wall s (min-max) | training s (median) |")
    print("|---|---|---|---:|---:|---:|")
    for (condition, threads, policy), results in times.items():
        walls, trains = [r[0] for r in results], [r[1] for r in results]
        print(f"| {condition} | {threads} | {policy or 'unset'} | {statistics.median(walls):.1f} | "
              f"{min(walls):.1f}-{max(walls):.1f} | {statistics.median(trains):.1f} |")


if __name__ == "__main__":
    main()
