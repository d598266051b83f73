"""The `logger` config group (bitnet.loggers): tiny real trainings (in-process, threads=1) mirrored into the
real TensorBoard, MLflow and W&B libraries, each read back with that library's own reader and compared with
metrics.csv; a missing library is a one-line error before training; a failing tracker never costs a CSV row."""

from __future__ import annotations

import csv
import json
import logging
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bitnet.keys import ConfigError
from bitnet.loggers import LIBRARIES, STATE_FILE, LoggerConfig, TensorBoard, flatten
from tests.conftest import CONF_DIR, REPO_ROOT, TINY, run_main


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*TINY, *overrides])


def train(folder: Path, *overrides: str) -> dict:
    from bitnet.train import Run

    return Run(compose(*overrides), folder).run()


def csv_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{column: [(step, value), ...]} of the non-empty cells of metrics.csv, as a tracker should have them."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(folder / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "step" and value != "":
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def assert_series(got: list, expected: list, key: str) -> None:
    """Step by step; the CSV keeps 6 significant digits, a tracker full precision."""
    assert [step for step, _ in got] == [step for step, _ in expected], key
    assert [value for _, value in got] == pytest.approx([value for _, value in expected], rel=1e-5, abs=1e-12), key


def assert_same_series(mirrored: dict, folder: Path) -> None:
    """Every metrics.csv column, and no other."""
    expected = csv_series(folder)
    assert set(mirrored) == set(expected)
    for key, points in expected.items():
        assert_series(mirrored[key], points, key)


def resolved_config(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())["config"]


# ---- the config group ------------------------------------------------------------------------------------
def test_the_default_logger_is_csv_and_writes_only_bitnets_files(tmp_path):
    from bitnet.config import RunConfig

    assert RunConfig.from_config(compose()).logger == LoggerConfig("csv")
    train(tmp_path)
    assert not (tmp_path / STATE_FILE).exists()
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.csv", "layers.csv", "run.json", ".lock"}


def test_each_logger_reads_its_own_keys():
    from bitnet.config import RunConfig

    def logger(*overrides):
        return RunConfig.from_config(compose(*overrides)).logger

    assert logger("logger=tensorboard", "logger.dir=tb") == LoggerConfig("tensorboard", dir="tb")
    assert logger("logger=mlflow") == LoggerConfig("mlflow", tracking_uri=None, experiment="bitnet")
    assert logger("logger=wandb", "logger.project=mine") == LoggerConfig("wandb", dir=None, experiment="mine",
                                                                         mode="offline")
    with pytest.raises(ConfigError, match=r"^logger\.mode=upload: expected one of offline, online, disabled$"):
        logger("logger=wandb", "logger.mode=upload")
    with pytest.raises(ConfigError, match=r"^logger\.experiment='': must be a non-empty name$"):
        logger("logger=mlflow", "logger.experiment=''")


def test_the_logger_is_not_part_of_what_the_run_computes():
    """Adding a tracker to a finished or killed point must not make it a different point (no retraining)."""
    from bitnet.config import RunConfig

    fingerprints = {RunConfig.from_config(compose(f"logger={name}")).fingerprint for name in LIBRARIES}
    assert len(fingerprints) == 1


@pytest.mark.parametrize("name", [name for name, module in LIBRARIES.items() if module])
def test_a_missing_tracker_library_is_a_one_line_error_before_training(tmp_path, name, monkeypatch):
    """As a user without the extra sees it: the CLI, with the library made unimportable, exits 2 naming the
    extra, and no run folder is made."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else find_spec(n, *a))
    folder = tmp_path / "run"
    result = run_main(*TINY, f"logger={name}", f"hydra.run.dir={folder}", cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f'error: logger={name}: the {name} package is not installed; install it with pip install "bitnet-sweeps[{name}]" '
        f"(or choose another logger: csv, tensorboard, mlflow, wandb)"]
    assert not folder.exists()


def test_training_imports_no_tracker_library():
    """The core install stays light: a tracker's library is imported when that tracker starts, not before."""
    code = ("import sys, bitnet.run, bitnet.train, bitnet.validate, bitnet.probe, bitnet.loggers; "
            "print(sorted(m for m in ('tensorboard', 'mlflow', 'wandb', 'torch.utils.tensorboard') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_every_extra_is_declared_in_setup_cfg():
    from configparser import ConfigParser

    parser = ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    extras = parser["options.extras_require"]
    for name, module in LIBRARIES.items():
        if module:
            assert module in extras[name], name


# ---- TensorBoard -----------------------------------------------------------------------------------------
def tensorboard_scalars(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events


def tensorboard_text(events, tag: str) -> str:
    return events.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


def test_tensorboard_event_files_hold_every_row_and_the_config(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    train(tmp_path, "logger=tensorboard")
    scalars, events = tensorboard_scalars(tmp_path / "tensorboard")
    assert_same_series(scalars, tmp_path)
    config = json.loads("\n".join(line[4:] for line in tensorboard_text(events, "config").splitlines()))
    assert config == resolved_config(tmp_path)
    assert tensorboard_text(events, "status") == "completed"
    assert json.loads((tmp_path / STATE_FILE).read_text())["status"] == "completed"


# ---- MLflow ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_store_holds_every_row_and_the_config(tmp_path):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow import MlflowClient

    train(tmp_path, "logger=mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bitnet")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["bitnet.status"] == "completed"
    assert run.info.run_name == tmp_path.name
    assert run.info.run_id == json.loads((tmp_path / STATE_FILE).read_text())["run_id"]
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                        key=lambda m: m.step)]
               for key in run.data.metrics}
    assert_same_series(history, tmp_path)
    config = resolved_config(tmp_path)
    assert run.data.params == {key: json.dumps(value) if isinstance(value, list) else str(value)
                               for key, value in flatten(config).items()}
    artifact = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path / "download")))
    assert json.loads(artifact.read_text()) == config
    assert Path(experiment.artifact_location.removeprefix("file://")) == tmp_path.resolve() / "mlartifacts"


@pytest.mark.slow
def test_the_points_of_a_sweep_share_one_mlflow_store(tmp_path):
    """Through the CLI, as a user sweeps: one store in the sweep folder, one MLflow run per point, named by
    the point's folder."""
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from mlflow import MlflowClient

    run_main("-m", *TINY, "logger=mlflow", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("bitnet").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["seed=0", "seed=1"]
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, "unique_tokens"), key=lambda m: m.step)
        expected = csv_series(tmp_path / run.info.run_name)["unique_tokens"]
        assert_series([(m.step, m.value) for m in history], expected, run.info.run_name)


# ---- W&B -------------------------------------------------------------------------------------------------
def wandb_records(path: Path):
    """The protobuf records of an offline run's .wandb file (LevelDB log format: 32 KiB blocks of chunks, each
    with a 7-byte header; the file starts with a 7-byte W&B header), as wandb's own sync reads them."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def items(entries) -> dict:
    """{key: value} of a record's items (a key is `key`, or `nested_key` joined)."""
    return {entry.key or ".".join(entry.nested_key): json.loads(entry.value_json) for entry in entries}


def test_wandb_offline_run_holds_every_row_and_the_config(tmp_path):
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    train(tmp_path, "logger=wandb")
    [run_folder] = (tmp_path / "wandb").glob("offline-run-*")
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["dir"] == str(run_folder) and state["mode"] == "offline" and state["status"] == "completed"
    [log_file] = run_folder.glob("run-*.wandb")
    history, config, exit_code = {}, {}, None
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            assert (record.run.run_id, record.run.project, record.run.display_name) == (state["run_id"], "bitnet",
                                                                                        tmp_path.name)
            config.update(items(record.run.config.update))
        elif kind == "config":
            config.update(items(record.config.update))
        elif kind == "history":
            for key, value in items(record.history.item).items():
                if not key.startswith("_"):  # W&B's own (_step, _timestamp, _runtime)
                    history.setdefault(key, []).append((record.history.step.num, value))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    config.pop("_wandb", None)
    assert config == resolved_config(tmp_path)
    assert_same_series(history, tmp_path)
    assert exit_code == 0


# ---- a resumed run ---------------------------------------------------------------------------------------
def stop_then_resume(folder: Path, name: str, monkeypatch) -> tuple[dict, dict]:
    """Train with logger=name, stopped by SIGTERM at step 35 (rows up to 30, checkpoint at 20), then resume
    from step 20 to 40 (row 30 again); the logger.json of each attempt."""
    from bitnet.train import Run, Stopped

    overrides = (f"logger={name}", "train.steps=40", "train.checkpoint_every=20")
    original = Run.train_step

    def stop_at_35(self):
        if self.step == 35:
            raise Stopped(signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(Run, "train_step", stop_at_35)
    with pytest.raises(Stopped):
        train(folder, *overrides)
    first = json.loads((folder / STATE_FILE).read_text())
    monkeypatch.setattr(Run, "train_step", original)
    assert train(folder, *overrides)["status"] == "completed"
    return first, json.loads((folder / STATE_FILE).read_text())


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_resumed_run_goes_on_in_the_same_tracker_run(tmp_path, monkeypatch, name):
    pytest.importorskip(name, reason=f"the [{name}] extra is not installed")
    first, second = stop_then_resume(tmp_path, name, monkeypatch)
    assert (first["status"], second["status"]) == ("interrupted", "completed")
    if name == "tensorboard":  # one event series over both attempts, each step once, as in metrics.csv
        scalars, _ = tensorboard_scalars(tmp_path / "tensorboard")
        assert [step for step, _ in scalars["unique_tokens"]] == [0, 10, 20, 30, 40]
        assert_same_series(scalars, tmp_path)
    elif name == "mlflow":
        from mlflow import MlflowClient

        assert first["run_id"] == second["run_id"]
        client = MlflowClient(tracking_uri=second["tracking_uri"])
        assert client.get_run(second["run_id"]).info.status == "FINISHED"
        history = sorted(client.get_metric_history(second["run_id"], "eval_loss"), key=lambda m: (m.step, m.timestamp))
        assert [m.step for m in history] == [0, 10, 20, 30, 30, 40]  # append-only: step 30 from each attempt
        latest = {m.step: m.value for m in history}  # the resumed attempt's value, logged last
        assert_series(sorted(latest.items()), csv_series(tmp_path)["eval_loss"], name)
    else:  # offline W&B writes each attempt to its own folder under the same run id; `wandb sync` joins them
        assert first["run_id"] == second["run_id"] and first["dir"] != second["dir"]
        # offline-run-<date>_<time>-<id>; W&B adds "-1" to the second folder when both attempts start in one second
        folders = [re.fullmatch(r"offline-run-\d{8}_\d{6}-([^-]+)(-\d+)?", p.name)
                   for p in (tmp_path / "wandb").glob("offline-run-*")]
        assert all(folders) and sorted(m.group(1) for m in folders) == [first["run_id"]] * 2


# ---- a tracker that fails ----------------------------------------------------------------------------------
def test_a_tracker_failing_mid_run_costs_no_csv_row(tmp_path, monkeypatch, caplog):
    """TensorBoard's writer raising at step 10 (a full disk, say): one warning, the run completes, metrics.csv
    equals a run without a tracker, and the tracker keeps what it had before the failure."""
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    original = TensorBoard.log_row

    def fail_at_10(self, step, row):
        if step == 10:
            raise OSError(28, "No space left on device")
        return original(self, step, row)

    monkeypatch.setattr(TensorBoard, "log_row", fail_at_10)
    with caplog.at_level(logging.WARNING, logger="bitnet"):
        assert train(tmp_path / "failing", "logger=tensorboard")["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if "logger=tensorboard failed" in r.getMessage()]
    assert warnings == ["logger=tensorboard failed at step 10 (OSError: [Errno 28] No space left on device); "
                        "metrics.csv is unaffected; no more rows go to tensorboard in this run"]
    train(tmp_path / "plain")
    timing = {"elapsed_s"}
    failing, plain = csv_series(tmp_path / "failing"), csv_series(tmp_path / "plain")
    assert {k: v for k, v in failing.items() if k not in timing} == {k: v for k, v in plain.items() if k not in timing}
    assert [step for step, _ in failing["unique_tokens"]] == [0, 10, 20]
    scalars, _ = tensorboard_scalars(tmp_path / "failing" / "tensorboard")
    assert [step for step, _ in scalars["unique_tokens"]] == [0]
    state = json.loads((tmp_path / "failing" / STATE_FILE).read_text())
    assert state["error"] == "at step 10: OSError: [Errno 28] No space left on device"


def test_a_tracker_failing_at_start_leaves_the_run_to_the_csv(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    from bitnet.loggers import MLflow

    def refuse(self, config):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(MLflow, "start", refuse)
    with caplog.at_level(logging.WARNING, logger="bitnet"):
        assert train(tmp_path, "logger=mlflow")["status"] == "completed"
    assert any("logger=mlflow failed at start (ConnectionError: tracking server unreachable)" in r.getMessage()
               for r in caplog.records)
    assert [step for step, _ in csv_series(tmp_path)["unique_tokens"]] == [0, 10, 20]
    assert json.loads((tmp_path / STATE_FILE).read_text())["error"] == (
        "at start: ConnectionError: tracking server unreachable")


# ---- bitnet.probe.Probe (training code that is not bitnet's; the HF and Lightning callbacks pass logger= on) ----
def test_a_probe_mirrors_its_rows_and_config(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    import torch

    from bitnet.probe import Probe

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 16), torch.nn.Linear(16, 64))
    probe = Probe(tmp_path, torch.randint(0, 64, (4000,)), positions=128, seq_len=16, labels={"hidden": 16},
                  config={"train": {"steps": 2}}, logger="tensorboard")
    for step in (0, 1, 2):
        probe(model, step, loss=None if step == 0 else 4.0 - step)
        with torch.no_grad():
            model[1].weight.mul_(1.5)  # a different prediction at each row
    probe.finish()
    scalars, events = tensorboard_scalars(tmp_path / "tensorboard")
    assert_same_series(scalars, tmp_path)
    assert json.loads("\n".join(line[4:] for line in tensorboard_text(events, "config").splitlines())) == \
        resolved_config(tmp_path) == {"hidden": 16, "train": {"steps": 2}}
    assert tensorboard_text(events, "status") == "completed"


def test_a_probe_checks_its_logger_as_a_run_does():
    from bitnet.probe import Probe

    with pytest.raises(ConfigError, match=r"^logger=neptune: expected one of csv, tensorboard, mlflow, wandb$"):
        Probe("unused", list(range(4000)), positions=128, seq_len=16, logger="neptune")
    with pytest.raises(ConfigError, match=r"^logger\.mode=upload: expected one of offline, online, disabled$"):
        LoggerConfig.preset("wandb", mode="upload")
