"""The run folder's contract, in one place: the name of every file bitnet writes into a run or sweep folder,
the columns of metrics.csv, the run record (run.json) and how each is written and read.

A grid point leaves `metrics.csv` (one row per evaluation, written whole and flushed) and `run.json` (the
`RunRecord`: status, resolved switch steps, labels, measurement facts, the resolved config), both safe to read
while the run is going. Every other file is replaced atomically (`atomic_file`), and the point's lock
(`point_lock`) keeps two processes from training the same point at once.

Writers: bitnet's training loop (bitnet.train), `bitnet.probe.Probe` and its callbacks, and the analysis's
import of foreign CSVs all build their record with `run_record` and write it with `write_record`. Readers:
resume (bitnet.train), the sweep's progress lines (bitnet.progress) and the analysis (analysis.load) read it with
`read_record`, which also fills in what a record written by an older version did not state.

Plain Python (no torch, no Hydra): the analysis imports it.
"""

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from bitnet.switches import stated_switch_steps

# ---- the files -----------------------------------------------------------------------------------------------
# In a run folder (one grid point):
METRICS_FILE = "metrics.csv"        # one row per evaluation: METRIC_COLUMNS
LAYERS_FILE = "layers.csv"          # one row per (evaluation, BitLinear layer): LAYER_COLUMNS
RECORD_FILE = "run.json"            # the RunRecord
CHECKPOINT_FILE = "checkpoint.pt"   # the state a stopped run resumes from (removed when it finishes)
LOCK_FILE = ".lock"                 # point_lock
TEMPORARY_SUFFIX = ".tmp"           # atomic_file's temporaries
HYDRA_FOLDER = ".hydra"             # Hydra's record of the point: overrides.yaml, config.yaml
OVERRIDES_FILE = "overrides.yaml"   # in HYDRA_FOLDER: the point's overrides, one `key=value` a line
CONFIG_FILE = "config.yaml"         # in HYDRA_FOLDER: the composed config, interpolations unresolved
# In a sweep folder:
GRID_MANIFEST = "grid.json"         # every point's overrides and folder, written before anything is launched
SWEEP_CONFIG = "multirun.yaml"      # Hydra's record of the sweep

# ---- metrics.csv's columns ----------------------------------------------------------------------------------
# Adding a metric: compute it where its kind is computed (bitnet.probe.evaluate for a function of the held-out
# predictions, bitnet.diagnostics for weights and generations, bitnet.train for the loop's own numbers), add its
# column at the end of a list below (an older CSV without it reads as NaN), and, for it to reach a table, give it
# a row in the analysis's measures (analysis/measures.py). docs/architecture.md has the whole path.
# The columns every metrics.csv starts with: training loss, the diversity metric, the schedules, progress.
CORE_COLUMNS = ["step", "loss", "unique_tokens", "eval_loss", "unique_targets", "pred_entropy", "top1_share",
                "lr", "wd", "lr_stage", "wd_stage", "tokens_seen", "elapsed_s"]
# Continuations of held-out prompts (bitnet.diagnostics.generation_report).
GENERATION_COLUMNS = ["greedy_distinct1", "greedy_distinct2", "greedy_repeat3",
                      "sampled_distinct1", "sampled_distinct2", "sampled_repeat3"]
# RMS of the parameter groups that decay on every parameter shrinks (bitnet.diagnostics.parameter_group_rms).
PARAMETER_GROUP_COLUMNS = ["embed_rms", "head_rms", "norm_gain_rms", "final_norm_rms"]
# The collapse diagnostics (bitnet.diagnostics, bitnet.probe.evaluate).
DIAGNOSTIC_COLUMNS = ["loss_gap", "effective_tokens", "hidden_cosine", "zero_frac", "flip_rate", "latent_rms",
                      "grad_norm", *GENERATION_COLUMNS, "softmax_entropy", *PARAMETER_GROUP_COLUMNS, "logit_std"]
# Every metrics.csv bitnet writes (its loop, Probe and the callbacks) has these columns, in this order.
METRIC_COLUMNS = [*CORE_COLUMNS, *DIAGNOSTIC_COLUMNS]
# layers.csv (bitnet.diagnostics.WeightTracker).
LAYER_COLUMNS = ["step", "layer", "zero_frac", "flip_rate", "latent_rms"]

# ---- which config keys say what a run computes ---------------------------------------------------------------
# Keys that change how a run is executed but not what it computes: a checkpoint stays valid across them, and
# the analysis never keeps points apart by them.
EXECUTION_KEYS = ("device", "compile", "threads", "progress", "logger", "data.cache_dir")
# `grid`: the sizes, seeds and horizons presets interpolate into the keys they set, which are compared there, so
# that a scale gaining a grid value does not turn the finished points of every preset into "another config".
PRESET_KEYS = ("grid",)
UNCOMPUTED_KEYS = (*EXECUTION_KEYS, *PRESET_KEYS)


def uncomputed(key: str) -> bool:
    """Whether a dotted config key (`data.cache_dir`, `grid.hidden`) is one of UNCOMPUTED_KEYS or inside one."""
    return any(key == k or key.startswith(f"{k}.") for k in UNCOMPUTED_KEYS)


def computed_part(config: dict, prefix: str = "") -> dict:
    """A resolved config without its UNCOMPUTED_KEYS: what the run computes (fingerprints, differences)."""
    return {key: computed_part(value, f"{prefix}{key}.") if isinstance(value, dict) else value
            for key, value in config.items() if not uncomputed(f"{prefix}{key}")}


# ---- run statuses --------------------------------------------------------------------------------------------
# A point is done when its status is one of FINISHED_STATUSES; the others resume on a rerun (`interrupted`:
# stopped by Ctrl-C or SIGTERM, not an error).
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


def torn_last_line(path: Path, tail: int = 65536) -> str | None:
    """The last line of a CSV when a kill mid-write cut it (no newline at the end, or fewer fields than the
    header: `10000,,1`, or `1000` cut from `10000`), else None. Reads the header and the file's last `tail` bytes
    only, so it costs the same for any size. Resume cuts such a line off (MetricsCSV.truncate_after); the
    analysis drops it from what it reads."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        header = handle.readline()
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size <= len(header):  # the header alone (or less): nothing to drop
            return None
        handle.seek(max(len(header), size - tail))
        end = handle.read()
    text = end.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        return None
    last = lines[-1]
    if not text.endswith("\n") or last.count(",") < header.decode("utf-8", errors="replace").count(","):
        return last
    return None


# ---- run.json ---------------------------------------------------------------------------------------------------
class RecordError(ValueError):
    """A run.json that cannot be read as a run record (one line naming the file)."""


@dataclass
class RunRecord:
    """run.json. Written whole (atomically) at every change of state; what a writer does not know is null."""

    status: str                          # RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED (or the analysis's own)
    step: int | None = None              # the last step with a metrics.csv row
    last_step: int | None = None         # the steps that run: train.steps, or the first switch (train.stage1_only)
    total_steps: int | None = None       # the schedules' horizon: train.steps
    switch_steps: dict = field(default_factory=dict)  # {"lr": step or None, "wd": ...}; a kind left out: unknown
    eval_every: int | None = None        # evaluation rows at step 0, every eval_every steps and at last_step
    params: dict | None = None           # parameter counts: total, embedding, non_embedding
    vocab_size: int | None = None        # measurement facts (bitnet.probe.measurement_facts) ...
    ln_vocab: float | None = None
    unigram_entropy: float | None = None
    eval_positions: int | None = None
    eval_unique_targets: int | None = None
    labels: dict = field(default_factory=dict)  # what tells a run from outside a sweep apart (a sweep: its overrides)
    source: str | None = None            # who measured it: bitnet, bitnet.probe, transformers.Trainer, ...
    corpus: dict | None = None           # fingerprint and split sizes of bitnet's corpus
    device: str | None = None
    cpu_threads: int | None = None
    elapsed_s: float | None = None       # training time
    config_fingerprint: str | None = None
    versions: dict | None = None
    diverged_step: int | None = None     # DIVERGED: the first step with a non-finite loss
    error: str | None = None             # FAILED, INTERRUPTED, DIVERGED, or a note on an imported run
    metrics_csv: str = METRICS_FILE
    config: dict = field(default_factory=dict)  # the resolved config (bitnet), or what is known of it
    settings: dict | None = None         # a probe's: the training code's own settings, verbatim
    setup_findings: list | None = None   # bitnet.setup_check's findings (None: not checked)
    extra: dict = field(default_factory=dict)  # keys this version does not know (a newer writer's), kept

    def to_json(self) -> dict:
        data = asdict(self)
        return {**data.pop("extra"), **data}

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        """A record from run.json's object (run_record fills in what an older version's record left out)."""
        return run_record(**{"status": None, **data})


def run_record(status: str, *, config: dict | None = None, switch_steps: dict | None = None, **facts) -> RunRecord:
    """The one way a run record is made, by every writer and by `read_record`. `switch_steps` is the run
    config's (bitnet's RunConfig states them); without it (a probe's or a foreign run's record, or one written
    before run.json stated them) they follow from `config` by the switch rule (bitnet.switches). ln_vocab
    follows from vocab_size. Facts this version does not know are kept in `extra`."""
    config = dict(config) if isinstance(config, dict) else {}
    known = {f.name for f in fields(RunRecord)}
    record = RunRecord(status=status, config=config,
                       switch_steps=stated_switch_steps(config) if switch_steps is None else switch_steps,
                       **{k: v for k, v in facts.items() if k in known and k != "extra"},
                       extra={k: v for k, v in facts.items() if k not in known})
    if record.ln_vocab is None and isinstance(record.vocab_size, int) and record.vocab_size > 0:
        record.ln_vocab = math.log(record.vocab_size)
    return record


def write_record(out_dir: Path, record: RunRecord) -> None:
    with atomic_file(Path(out_dir) / RECORD_FILE) as handle:
        handle.write(json.dumps(record.to_json(), indent=2, default=str) + "\n")


def read_record(out_dir: Path) -> RunRecord | None:
    """The folder's run.json (None when there is none); RecordError when it is not a regular file (a FIFO would
    block the read), is torn or is not a JSON object."""
    path = Path(out_dir) / RECORD_FILE
    if not path.exists():
        return None
    if not path.is_file():
        raise RecordError(f"{path}: not a regular file")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecordError(f"{path}: cannot be read as a JSON object (torn or not written by bitnet?): {reason}") \
            from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object, found {type(data).__name__} {str(data)[:40]!r}")
    return RunRecord.from_json(data)


def finished_step(record: RunRecord | dict) -> int:
    """The step a finished point is reported at: where it diverged (the first non-finite loss), else its last."""
    record = record if isinstance(record, RunRecord) else RunRecord.from_json(record)
    return record.diverged_step if record.status == DIVERGED else record.step
