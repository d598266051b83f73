"""What a grid point leaves on disk: `metrics.csv` (one row per evaluation, written whole and flushed) and
`run.json` (resolved config, parameter counts, status), both safe to read while the run is going."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

METRICS_FILE = "metrics.csv"
RECORD_FILE = "run.json"

# The columns every metrics.csv starts with (the collapse diagnostics follow: bitnet.diagnostics).
CORE_COLUMNS = ["step", "loss", "unique_tokens", "eval_loss", "unique_targets", "pred_entropy", "top1_share",
                "lr", "wd", "lr_stage", "wd_stage", "tokens_seen", "elapsed_s"]

# Run statuses. A point is done when its status is one of FINISHED_STATUSES.
RUNNING, COMPLETED, DIVERGED, FAILED = "running", "completed", "diverged", "failed"
FINISHED_STATUSES = (COMPLETED, DIVERGED)


# What a scheduler or a user sends to stop or preempt a job: SLURM/submitit (USR1/USR2/TERM) and Ctrl-C.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT")
                     if hasattr(signal, name))


@contextmanager
def deferred_signals(signums=STOP_SIGNALS):
    """Hold stop signals that arrive inside the block and deliver them, in order, when it ends.

    submitit's preemption handler exits the process from whatever Python code is running. Inside torch.save
    that exit is lost: the zip writer's cleanup raises "unexpected pos" instead, the job fails and is not
    requeued. Blocking with a signal mask is not enough (torch's worker threads would still take the signal),
    so the Python handlers are swapped for a recorder for the length of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, cannot be restored
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in caught:
            signal.raise_signal(signum)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers see the old or the new file,
    never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class MetricsCSV:
    """Appends rows to metrics.csv. Each row is formatted in memory and written with one call, then flushed
    and fsynced, so a crash leaves at most a partial last line, which `truncate_after` removes on resume."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._handle = open(self.path, "a", newline="")
        if new:
            self.write_many([dict(zip(self.columns, self.columns))])

    def _line(self, row: dict) -> str:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"metrics row has columns not in the header: {sorted(unknown)}")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_format(row.get(column)) for column in self.columns])
        return buffer.getvalue()

    def write(self, row: dict) -> None:
        self.write_many([row])

    def write_many(self, rows) -> None:
        """Several rows in one write (e.g. one evaluation's per-layer rows), then one flush and fsync."""
        self._handle.write("".join(self._line(row) for row in rows))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def truncate_after(path: Path, last_step: int) -> int:
        """Keep the header and the complete rows with step <= last_step; drop everything after (including a
        torn last line). Returns the number of data rows kept."""
        path = Path(path)
        if not path.exists():
            return 0
        text = path.read_text()
        lines = text.split("\n")
        complete = lines[:-1]  # the piece after the last newline is empty or torn
        kept = complete[:1]
        for line in complete[1:]:
            step = line.split(",", 1)[0]
            if step.isdigit() and int(step) <= last_step:
                kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        return max(len(kept) - 1, 0)  # 0 when even the header was torn


def write_record(out_dir: Path, record: dict) -> None:
    atomic_write_text(Path(out_dir) / RECORD_FILE, json.dumps(record, indent=2, default=str) + "\n")


def read_record(out_dir: Path) -> dict | None:
    path = Path(out_dir) / RECORD_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())
