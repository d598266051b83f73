"""The run folder's contract (bitnet.records): the run record every writer makes and every reader reads, records
written by older versions, the switch rule, the override lines the analysis reads without Hydra."""

from __future__ import annotations

import functools
import glob
import json
import math
import subprocess
import sys

import pytest
import yaml

from analysis.overrides import OverrideError, parse_override
from bitnet.records import (RECORD_FILE, RecordError, computed_part, read_record, run_record, uncomputed,
                            write_record)
from bitnet.switches import stated_switch_steps
from tests.conftest import REPO_ROOT


# ---- the switch rule ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, expected", [
    ({"lr": {"name": "two_stage", "switch_step": None}, "wd": {"name": "constant"}, "train": {"steps": 1000}},
     {"lr": 500, "wd": None}),                                  # null: the midpoint, as bitnet's schedules do
    ({"wd": {"name": "two_stage", "switch_step": 300}, "train": {"steps": 1000}}, {"wd": 300}),
    ({"wd": {"switch_step": 5000}}, {"wd": 5000}),              # a bare label, as a probe or foreign CSV gives it
    ({"wd": {"name": "two_stage"}}, {"wd": None}),              # midpoint of an unknown length: not known
    ({"lr": 0.001, "hidden": 64}, {}),                          # nothing said about a schedule: left out
])
def test_switch_steps_of_a_plain_config(config, expected):
    assert stated_switch_steps(config) == expected


def test_the_run_config_and_a_plain_config_switch_at_the_same_step():
    from hydra import compose, initialize_config_dir

    from bitnet.config import RunConfig
    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = RunConfig.from_config(compose(config_name="config", overrides=[
            "lr=two_stage", "wd=two_stage", "wd.switch_step=30", "train.steps=90", "lr.warmup=5"]))
    assert config.switch_steps == {"lr": 45, "wd": 30}
    assert stated_switch_steps(config.resolved) == config.switch_steps
    assert config.recorded_facts == {"last_step": 90, "total_steps": 90, "switch_steps": {"lr": 45, "wd": 30},
                                     "eval_every": config.eval.every}


# ---- run.json ---------------------------------------------------------------------------------------------------
def test_a_record_round_trips_and_keeps_what_this_version_does_not_know(tmp_path):
    record = run_record("running", step=10, config={"train": {"steps": 20}}, switch_steps={"lr": None, "wd": 10},
                        vocab_size=512, newer_fact={"kept": True})
    assert record.ln_vocab == pytest.approx(math.log(512))
    write_record(tmp_path, record)
    written = json.loads((tmp_path / RECORD_FILE).read_text())
    assert written["newer_fact"] == {"kept": True} and written["switch_steps"] == {"lr": None, "wd": 10}
    assert read_record(tmp_path) == record


def test_a_record_written_before_switch_steps_were_recorded_gets_them_from_its_config(tmp_path):
    old = {"status": "completed", "step": 100, "vocab_size": 256, "metrics_csv": "metrics.csv",
           "config": {"lr": {"name": "linear", "switch_step": None},
                      "wd": {"name": "two_stage", "switch_step": None}, "train": {"steps": 100}}}
    (tmp_path / RECORD_FILE).write_text(json.dumps(old))
    record = read_record(tmp_path)
    assert record.switch_steps == {"lr": None, "wd": 50}
    assert record.ln_vocab == pytest.approx(math.log(256))


@pytest.mark.parametrize("text, message", [("{\"status\": \"comp", "cannot be read as a JSON object"),
                                           ("[1, 2]", "expected a JSON object, found list")])
def test_an_unreadable_record_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / RECORD_FILE).write_text(text)
    with pytest.raises(RecordError, match=message) as err:
        read_record(tmp_path)
    assert str(tmp_path / RECORD_FILE) in str(err.value) and "\n" not in str(err.value)


def test_uncomputed_keys_leave_the_fingerprint_and_nothing_else():
    assert uncomputed("device") and uncomputed("data.cache_dir") and uncomputed("grid.hidden")
    assert not uncomputed("data.path") and not uncomputed("seed") and not uncomputed("devices")
    config = {"seed": 0, "device": "cpu", "grid": {"hidden": 32}, "data": {"path": "a", "cache_dir": "/c"}}
    assert computed_part(config) == {"seed": 0, "data": {"path": "a"}}


def test_probe_records_the_midpoint_switch_of_its_known_config(tmp_path):
    import torch

    from bitnet.probe import Probe

    probe = Probe(tmp_path, torch.arange(2000) % 50, positions=64, seq_len=16, setup_check=False,
                  config={"wd": {"name": "two_stage"}, "train": {"steps": 400}})
    probe(lambda ids: torch.zeros(*ids.shape, 50), step=0)
    assert read_record(tmp_path).switch_steps == {"wd": 200}


# ---- a checkpoint taken under an older fingerprint rule ----------------------------------------------------------
class StopAfterCheckpoint(Exception):
    pass


def test_a_checkpoint_of_an_older_fingerprint_rule_resumes_when_its_record_matches(tmp_path, monkeypatch):
    """A rule change (e.g. data.cache_dir leaving the fingerprint) changes every hash: a checkpoint whose
    run.json records the same config and the same hash is this config's and resumes; a checkpoint whose record
    does not vouch for it is still refused."""
    import torch
    from hydra import compose, initialize_config_dir

    from bitnet.train import DifferentConfig, Run
    from tests.conftest import CONF_DIR, TINY

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, "train.checkpoint_every=10"])
    real_save = Run._save_checkpoint

    def save_then_stop(self):
        real_save(self)
        raise StopAfterCheckpoint

    monkeypatch.setattr(Run, "_save_checkpoint", save_then_stop)
    with pytest.raises(StopAfterCheckpoint):
        Run(cfg, tmp_path).run()
    monkeypatch.undo()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["fingerprint"] = "an-older-rule"
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(DifferentConfig, match="holds a checkpoint of a different config"):
        Run(cfg, tmp_path).run()  # run.json records today's hash: the checkpoint is not vouched for
    recorded = json.loads((tmp_path / RECORD_FILE).read_text())
    (tmp_path / RECORD_FILE).write_text(json.dumps({**recorded, "config_fingerprint": "an-older-rule"}))
    resumed = Run(cfg, tmp_path).run()
    assert resumed["status"] == "completed" and resumed["step"] == 20
    assert [line.split(",")[0] for line in (tmp_path / "metrics.csv").read_text().splitlines()] == \
        ["step", "0", "10", "20"]


# ---- override lines, read without Hydra ---------------------------------------------------------------------------
LINES = ["hidden=256", "+intervention=standard", "++x=1", "~logger", "~lr.peak=1e-3", "lr.peak=1e-3", "a=.5",
         "a=5.", "a=1_000", "a=-3", "a=inf", "a=-inf", "a=True", "a=FALSE", "a=NULL", "a=", "x=007",
         "data.path='my text.txt'", 'data.path="a,b"', "a='it\\'s'", "x='a\\\\b'", "x=[1,2,'a b',[3]]", "x=[]",
         "x={a:1,b:[2,3]}", "x= spaced value ", "x=${grid.hidden}", "x=${oc.env:HOME}", "x='${a}'",
         "hydra/launcher=slurm", "x=a/b.txt", "db@pkg=mysql", "x=1.5e-3", "x=1k", "x=a\\,b", "x=[ 1 , 2 ]"]


def recorded_lines() -> list[str]:
    """Every override line the committed sweeps and fixtures hold (grid.json and .hydra/overrides.yaml)."""
    lines = []
    for path in glob.glob(str(REPO_ROOT / "**" / ".hydra" / "overrides.yaml"), recursive=True):
        lines += [str(line) for line in yaml.safe_load(open(path)) or []]
    for path in glob.glob(str(REPO_ROOT / "**" / "grid.json"), recursive=True):
        lines += [line for point in json.load(open(path))["points"] for line in point["overrides"]]
    return list(dict.fromkeys(lines))


@functools.cache
def hydra_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_reading(line: str):
    [override] = hydra_parser().parse_overrides([line])
    key = override.key_or_group + (f"@{override.package}" if override.package else "")
    return key, None if override.is_delete() else override.value()


def test_override_lines_read_as_hydra_reads_them():
    lines = LINES + recorded_lines()
    assert len(lines) > len(LINES) + 20  # the committed results are among them
    for line in lines:
        ours = parse_override(line)
        key, value = hydra_reading(line)
        assert ours.key == key, line
        assert json.dumps(ours.value, default=repr) == json.dumps(value, default=repr), line  # types too: 1 != 1.0
        assert type(ours.value) is type(value), line


def test_override_prefixes_and_values():
    assert parse_override("+intervention=standard").prefix == "+"
    assert parse_override("~logger").is_delete and parse_override("~logger").value is None
    assert parse_override("data.path='a b, c'").value == "a b, c"
    assert parse_override("x=[1,'two',[3.5]]").value == [1, "two", [3.5]]
    assert parse_override("x=${oc.env:HOME}").value == "${oc.env:HOME}"  # kept as text, never resolved


@pytest.mark.parametrize("line, message", [("hidden=32,64", "a sweep a,b is not one value"),
                                           ("seed=range(0,3)", "a function call"),
                                           ("x='open", "never closed"), ("x=[1,2", "never closed|not closed"),
                                           ("=5", "not an override"), ("hidden", "no value")])
def test_what_is_not_one_override_is_refused_in_one_line(line, message):
    with pytest.raises(OverrideError, match=message) as err:
        parse_override(line)
    assert repr(line) in str(err.value)


def test_the_analysis_imports_nothing_of_hydra():
    code = ("import sys, analysis.load, analysis.measures, analysis.foreign, analysis.overrides, analysis.tables, "
            "analysis.report, analysis.document; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"
