"""What a grid point leaves on disk: `metrics.csv` (one row per evaluation, written whole and flushed) and
`run.json` (resolved config, parameter counts, status), both safe to read while the run is going; how every
other file is replaced atomically (`atomic_file`); and the point's lock (`point_lock`), which keeps two
processes from training the same point at once."""

from __future__ import annotations

import csv
import fcntl
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
LOCK_FILE = ".lock"
TEMPORARY_SUFFIX = ".tmp"

# The columns every metrics.csv starts with (the collapse diagnostics follow: bitnet.diagnostics).
CORE_COLUMNS = ["step", "loss", "unique_tokens", "eval_loss", "unique_targets", "pred_entropy", "top1_share",
                "lr", "wd", "lr_stage", "wd_stage", "tokens_seen", "elapsed_s"]

# Run statuses. A point is done when its status is one of FINISHED_STATUSES; the others resume on a rerun
# (`interrupted`: stopped by Ctrl-C or SIGTERM, not an error).
RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED = "running", "completed", "diverged", "failed", "interrupted"
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


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it, and setting it
    even briefly would affect files other threads create meanwhile)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """A handle on a new temporary file next to `path` that replaces `path` when the block ends without error:
    readers see the old or the new file, never half of one (the data is fsynced before the rename).

    The temporary name is unique, so two writers never share one, and it is removed if the block fails. The
    file gets the permissions the user's umask gives any new file (mkstemp's 0600 would hide results from the
    rest of a group on a shared cluster)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files `atomic_file` left in `folder` when a process was killed mid-write. Only call
    this while holding the folder's point lock: another writer's temporary file would be in use."""
    stale = [p for p in Path(folder).glob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def point_folder(name: str) -> str:
    """A point's folder name as one path component: `/` in an override's value (`data.path=a/b.txt`) is written
    `%2F`, so that no value can place a point in a subfolder or, with `..`, outside the sweep folder. The
    `${point_folder:...}` resolver of hydra.sweep.subdir (conf/config.yaml; registered by bitnet.run)."""
    return str(name).replace("/", "%2F")


@contextmanager
def point_lock(out_dir: Path):
    """Yield True while this process holds the exclusive lock of a point folder, False (at once, without
    waiting) when another process holds it.

    An OS lock (flock) on `.lock`: the kernel releases it when the holder exits, kill -9 included, so a lock is
    never stale and nothing has to clean it up. On Linux NFS, flock is carried by NFS byte-range locks, so it
    also holds between nodes of a cluster sharing the folder."""
    fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


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
        with atomic_file(path) as handle:
            handle.write("".join(f"{line}\n" for line in kept))
        return max(len(kept) - 1, 0)  # 0 when even the header was torn

    @staticmethod
    def ends_torn(path: Path) -> bool:
        """True when the file's last line is incomplete (no final newline): what a crash mid-write leaves."""
        path = Path(path)
        if not path.exists() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"


def write_record(out_dir: Path, record: dict) -> None:
    with atomic_file(Path(out_dir) / RECORD_FILE) as handle:
        handle.write(json.dumps(record, indent=2, default=str) + "\n")


def finished_step(record: dict) -> int:
    """The step a finished point is reported at: where it diverged (the first non-finite loss), else its last."""
    return record["diverged_step"] if record.get("status") == DIVERGED else record["step"]


def read_record(out_dir: Path) -> dict | None:
    path = Path(out_dir) / RECORD_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def switch_steps(config: dict) -> dict:
    """{"lr": step, "wd": step} for the schedules whose switch step a (nested) config states, e.g. for a run
    measured outside bitnet; a kind that is not stated is left out (not known, so not claimed to be absent)."""
    return {kind: config[kind]["switch_step"] for kind in ("lr", "wd")
            if isinstance(config.get(kind), dict) and config[kind].get("switch_step") is not None}
