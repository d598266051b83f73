"""Trackers: a copy of every metrics.csv row and of the run's resolved config in TensorBoard, MLflow or W&B.

The `logger` config group (conf/logger/) picks one:

    csv          metrics.csv, layers.csv and run.json only (always written, whatever the logger): the default
    tensorboard  event files in <run folder>/tensorboard (or logger.dir/<run folder name>)   pip extra [tensorboard]
    mlflow       a local store, mlflow.db and mlartifacts/ in the sweep folder (one store for all points) or the
                 run folder, or any logger.tracking_uri                                       pip extra [mlflow]
    wandb        offline by default (no network, no account): <run folder>/wandb/offline-run-*  pip extra [wandb]

metrics.csv stays the record of the run: each row is written there first, then mirrored. A tracker that fails
(at start, on a row or at the end) is reported once as a warning and dropped for the rest of the run; training
and the CSVs go on. A tracker's library is imported only when that tracker starts, so the core install does
not need any of them; `check_installed` (run by bitnet.validate, before anything trains) turns a missing one
into a one-line error naming the extra to install.

Each tracker has the same three calls, `start(config)`, `log_row(step, row)` and `finish(status)`;
`start_trackers` builds the configured one for a run folder and guards it (`Trackers`). A resumed run goes on
in the same tracker run where the tracker can: TensorBoard discards its events after the checkpoint's step
(`purge_step`), MLflow and W&B reuse the run id kept in <run folder>/logger.json (MLflow keeps both values of a
step logged before and after the resume: its metric history is append-only).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bitnet.keys import ConfigError, Keys, check_choice, first_line
from bitnet.records import COMPLETED, DIVERGED, FAILED, INTERRUPTED, atomic_file

log = logging.getLogger("bitnet")

STATE_FILE = "logger.json"  # in the run folder: which tracker run mirrors it (for a resume) and where it is
DISTRIBUTION = "bitnet-sweeps"     # the name pip installs the extras under (setup.cfg metadata.name)
# logger.name: the module each tracker imports and the pip extra that installs it (None: nothing to install).
LIBRARIES = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class LoggerConfig:
    """`logger` (conf/logger/*.yaml). Keys a tracker does not use are absent from its file and None here."""

    name: str                    # one of LIBRARIES
    dir: str | None = None       # tensorboard, wandb: the folder that receives every point's run; None = the run folder
    tracking_uri: str | None = None  # mlflow: a folder or URI; None = the sweep folder or run folder
    experiment: str | None = None    # mlflow: logger.experiment; wandb: logger.project
    mode: str | None = None          # wandb: offline, online or disabled

    @classmethod
    def from_keys(cls, keys: Keys) -> LoggerConfig:
        name = check_choice(keys.path("name"), keys.get("name"), LIBRARIES, group="logger")
        if name == "csv":
            return cls(name)
        fields = {"dir": keys.text("dir", optional=True)} if name in ("tensorboard", "wandb") else {}
        if name == "mlflow":
            fields["tracking_uri"] = keys.text("tracking_uri", optional=True)
        if name in ("mlflow", "wandb"):
            key = "experiment" if name == "mlflow" else "project"
            fields["experiment"] = keys.text(key)
            if not fields["experiment"].strip():
                raise keys.error(key, fields["experiment"], "must be a non-empty name")
        if name == "wandb":
            fields["mode"] = keys.choice("mode", WANDB_MODES)
        return cls(name, **fields)

    @classmethod
    def preset(cls, name: str, **changes) -> LoggerConfig:
        """conf/logger/<name>.yaml with `changes` over it, checked as a run checks it, library included: the
        logger of code that runs without Hydra (bitnet.probe.Probe), e.g. LoggerConfig.preset("mlflow",
        tracking_uri="runs")."""
        from omegaconf import OmegaConf

        from bitnet.run import CONF_DIR

        check_choice("logger", name, LIBRARIES)
        options = OmegaConf.merge(OmegaConf.load(CONF_DIR / "logger" / f"{name}.yaml"), changes)
        config = cls.from_keys(Keys(OmegaConf.create({"logger": options}), "logger"))
        config.check_installed()
        return config

    def check_installed(self) -> None:
        """ConfigError naming the pip extra when the tracker's library is not importable (nothing is imported)."""
        module = LIBRARIES[self.name]
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={self.name}: the {module} package is not installed; install it with "
                              f"pip install \"{DISTRIBUTION}[{self.name}]\" (or choose another logger: "
                              f"{', '.join(LIBRARIES)})")


@contextmanager
def exclusive(path: Path):
    """Hold an OS lock on `path` (waiting for it) for the length of the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model.layers": 2, ...}: nested config keys joined with dots (MLflow params)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(row: dict) -> dict:
    """The row's measured values as floats: the cells metrics.csv writes non-empty (None and NaN are empty
    there, so they are left out here too); `step` is the x axis, not a metric."""
    out = {}
    for key, value in row.items():
        if key == "step" or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isnan(value):
            out[key] = float(value)
    return out


class Tracker:
    """One tracker run mirroring one bitnet run folder.

    resumed_step  the checkpoint's step when the run resumes (the rows after it are logged again), else None
    sweep         the sweep folder when the run is a point of a sweep, else None
    previous      what logger.json kept of this tracker's run in an earlier attempt ({} when none)"""

    def __init__(self, options: LoggerConfig, out_dir: Path, *, resumed_step: int | None = None,
                 sweep: str | None = None, previous: dict | None = None):
        self.options, self.out_dir, self.resumed_step = options, Path(out_dir), resumed_step
        self.sweep, self.previous = sweep, previous or {}
        self.where = ""  # where the user finds the tracker run, shown in the log

    def start(self, config: dict) -> dict:
        """Open the tracker run and record the resolved config; returns what logger.json keeps of it."""
        raise NotImplementedError

    def log_row(self, step: int, row: dict) -> None:
        raise NotImplementedError

    def finish(self, status: str) -> None:
        raise NotImplementedError

    def folder(self, inside_run: str) -> Path:
        """logger.dir/<run folder name> when logger.dir is set (one folder for a whole sweep), else
        <run folder>/<inside_run>."""
        return Path(self.options.dir) / self.out_dir.name if self.options.dir else self.out_dir / inside_run


class TensorBoard(Tracker):
    def start(self, config: dict) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.folder("tensorboard")
        # purge_step: TensorBoard hides the earlier attempt's events at and after it, so the resumed rows replace them
        purge = self.resumed_step + 1 if self.resumed_step is not None else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), global_step=0)
        self.writer.flush()
        self.where = str(folder)
        return {"dir": str(folder)}

    def log_row(self, step: int, row: dict) -> None:
        for key, value in numbers(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a row is visible in TensorBoard as soon as metrics.csv has it

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status, global_step=0)
        self.writer.close()


# bitnet's run statuses as MLflow's (a diverged run finished as bitnet defines it; bitnet.status tag says which)
MLFLOW_STATUS = {COMPLETED: "FINISHED", DIVERGED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}


class MLflow(Tracker):
    def store(self) -> tuple[str, Path | None]:
        """(tracking URI, folder for artifacts and the lock, or None for a store given as a URI). A folder (or
        null: the sweep folder, else the run folder) holds a SQLite store, mlflow.db, and mlartifacts/: MLflow's
        own local store (its plain-file store refuses new runs unless MLFLOW_ALLOW_FILE_STORE is set)."""
        uri = self.options.tracking_uri
        if uri is not None and ("://" in uri or uri.startswith("databricks")):
            return uri, None
        folder = Path(uri if uri is not None else self.sweep or self.out_dir).resolve()
        return f"sqlite:///{folder / 'mlflow.db'}", folder

    def _experiment_id(self, folder: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        name = self.options.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = (folder / "mlartifacts").as_uri() if folder else None  # else MLflow's default: ./mlruns of the cwd
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # another point of the sweep created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def start(self, config: dict) -> dict:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri, folder = self.store()
        self.client = MlflowClient(tracking_uri=uri)
        run_id = self.previous.get("run_id") if self.previous.get("tracking_uri") == uri else None
        if run_id is not None and self.resumed_step is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"bitnet.run_dir": str(self.out_dir.resolve())}
            if self.sweep:
                tags["bitnet.sweep_dir"] = str(Path(self.sweep).resolve())
            if folder is not None:  # the points of a parallel sweep share the store: one creates its tables
                folder.mkdir(parents=True, exist_ok=True)
                with exclusive(folder / ".mlflow.lock"):
                    experiment = self._experiment_id(folder)
            else:
                experiment = self._experiment_id(None)
            run_id = self.client.create_run(experiment, run_name=self.out_dir.name, tags=tags).info.run_id
            params = [Param(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
                      for key, value in flatten(config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
                self.client.log_batch(run_id, params=params[start:start + 100])
            self.client.log_dict(run_id, config, "config.json")
        self.client.set_tag(run_id, "bitnet.status", "running")
        self.run_id = run_id
        self.where = f"{uri} (experiment {self.options.experiment}, run {run_id})"
        return {"tracking_uri": uri, "experiment": self.options.experiment, "run_id": run_id}

    def log_row(self, step: int, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step)
                                                    for key, value in numbers(row).items()])

    def finish(self, status: str) -> None:
        self.client.set_tag(self.run_id, "bitnet.status", status)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))


class WandB(Tracker):
    def start(self, config: dict) -> dict:
        import wandb

        folder = self.folder("")  # W&B makes its own wandb/ folder inside
        folder.mkdir(parents=True, exist_ok=True)
        run_id = self.previous.get("run_id") if self.resumed_step is not None else None
        self.run = wandb.init(
            project=self.options.experiment, name=self.out_dir.name, group=self.sweep[-128:] if self.sweep else None,
            dir=str(folder), mode=self.options.mode, config=config, id=run_id,
            resume="allow" if run_id else None, reinit="create_new",
            # console off: bitnet's own log and progress bar stay as they are; no system-metrics sampler thread
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        folder = str(Path(self.run.dir).parent)  # wandb/offline-run-<time>-<id>; run.dir is its files/
        self.where = (self.run.url if self.options.mode == "online" else None) or folder
        return {"mode": self.options.mode, "project": self.options.experiment, "run_id": self.run.id, "dir": folder}

    def log_row(self, step: int, row: dict) -> None:
        self.run.log(numbers(row), step=step)

    def finish(self, status: str) -> None:
        self.run.summary["bitnet_status"] = status
        self.run.finish(exit_code=0 if status in (COMPLETED, DIVERGED) else 1)


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def sweep_folder() -> str | None:
    """The sweep folder when this process runs a point of a Hydra multirun (its trackers share it), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return str(HydraConfig.get().sweep.dir)
    except Exception:  # noqa: BLE001 - outside Hydra there is no sweep
        pass
    return None


class Trackers:
    """The run's tracker behind a guard: its first error is logged once with what it hit, the tracker is dropped
    and training goes on (metrics.csv already has the row). Without a tracker (logger=csv) every call does
    nothing. logger.json in the run folder says which tracker run mirrors it, where, and how it ended."""

    def __init__(self, tracker: Tracker | None, out_dir: Path):
        self.tracker, self.out_dir = tracker, Path(out_dir)
        self.state = {"name": tracker.options.name} if tracker else {}

    def _guard(self, what: str, call):
        if self.tracker is None:
            return None
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - a tracker never stops training nor touches the CSVs
            name = self.tracker.options.name
            reason = first_line(err)
            log.warning(f"logger={name} failed {what} ({type(err).__name__}: {reason}); metrics.csv is unaffected; "
                        f"no more rows go to {name} in this run")
            self.tracker = None
            self._save(error=f"{what}: {type(err).__name__}: {reason}")
            return None

    def _save(self, **facts) -> None:
        self.state.update(facts)
        try:
            with atomic_file(self.out_dir / STATE_FILE) as handle:
                handle.write(json.dumps(self.state, indent=2) + "\n")
        except OSError as err:  # a note for the user; the run does not depend on it
            log.warning(f"could not write {self.out_dir / STATE_FILE}: {err}")

    def start(self, config: dict) -> None:
        facts = self._guard("at start", lambda: self.tracker.start(config))
        if facts is not None:
            self._save(**facts, status="running")
            log.info(f"Mirroring metrics rows to {self.state['name']}: {self.tracker.where}")

    def log_row(self, step: int, row: dict) -> None:
        self._guard(f"at step {step}", lambda: self.tracker.log_row(step, row))

    def finish(self, status: str) -> None:
        self._guard("at the end", lambda: self.tracker.finish(status))
        if self.tracker is not None:
            self._save(status=status)
        self.tracker = None  # finished once; a second call does nothing


def read_state(out_dir: Path) -> dict:
    """logger.json of a run folder, {} when absent or unreadable (plain JSON; only ids and paths are read)."""
    try:
        state = json.loads((Path(out_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def start_trackers(options: LoggerConfig, out_dir: Path, config: dict, resumed_step: int | None = None) -> Trackers:
    """The configured tracker for the run in `out_dir`, started with the resolved `config` (none for csv)."""
    kind = TRACKERS.get(options.name)
    if kind is None:
        return Trackers(None, out_dir)
    previous = read_state(out_dir)
    tracker = kind(options, out_dir, resumed_step=resumed_step, sweep=sweep_folder(),
                   previous=previous if previous.get("name") == options.name else {})
    trackers = Trackers(tracker, out_dir)
    trackers.start(config)
    return trackers
