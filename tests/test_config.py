"""The typed run config: what it derives for training, and keys missing from a config (e.g. a user's own
YAML) are one-line errors before anything runs, not crashes in the middle of training."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from bitnet.config import RunConfig
from bitnet.keys import ConfigError
from bitnet.run import register_presets
from tests.conftest import CONF_DIR, TINY


def run_config(*overrides: str, base=TINY) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return RunConfig.from_config(compose(config_name="config", overrides=[*base, *overrides]))


@pytest.mark.parametrize("removed, named", [
    ("train.label_smoothing", "train.label_smoothing"), ("model.quantize_head", "model.quantize_head"),
    ("eval.generate", "eval.generate.every"), ("compile", "compile"), ("progress", "progress"),
    ("lr.final_ratio", "lr.final_ratio"), ("train.stage1_only", "train.stage1_only")])
def test_a_key_missing_from_the_config_is_named(removed, named):
    with pytest.raises(ConfigError) as caught:
        run_config(f"~{removed}")
    assert str(caught.value) == f"{named} is missing from the config: add it with +{named}=..."


def evaluated(config: RunConfig) -> list[int]:
    return [step for step in range(config.train.steps + 2) if step in config.eval_steps]


def test_derived_facts():
    config = run_config("lr=two_stage", "wd=two_stage", "wd.switch_step=5", "train.steps=40")
    assert config.switch_steps == {"lr": 20, "wd": 5}  # lr: the midpoint; wd: as given
    assert config.last_step == 40 and evaluated(config) == [0, 10, 20, 30, 40]
    stage1 = run_config("lr=two_stage", "wd=two_stage", "wd.switch_step=5", "train.steps=40",
                        "train.stage1_only=true", "eval.every=2")
    assert stage1.last_step == 5 and evaluated(stage1) == [0, 2, 4, 5]  # stops at the first switch
    assert evaluated(run_config("eval.every=7")) == [0, 7, 14, 20]
    assert [run_config("eval.every=7").eval_steps.number(s) for s in (0, 7, 14, 20)] == [0, 1, 2, 3]
    assert run_config("train.checkpoint_every=null").train.checkpoint_every == 0


def test_fingerprint_ignores_execution_keys_only():
    base = run_config().fingerprint
    assert run_config("device=cpu", "threads=2", "progress=true", "compile=true").fingerprint == base
    assert run_config("lr.peak=1e-3").fingerprint != base
    assert run_config("precision=fp32").fingerprint != base  # numerics: a different run


def test_each_group_is_read_into_its_own_typed_config():
    config = run_config("model=bitnet_2b4t", "lr=cosine", "wd=two_stage", "train.grad_clip=1")
    assert (config.model.norm, config.model.ffn, config.model.vocab_size, config.model.max_seq_len) == \
        ("subln", "relu2", 512, 32)
    assert config.lr.name == "cosine" and config.lr.final_ratio == 0.0 and config.lr.stage2_peak is None
    assert config.wd.stage2_value == 0.0 and config.wd.switch == 10
    assert config.optim.betas == (0.9, 0.95) and config.train.grad_clip == 1.0
    assert config.eval.generate.every == 0 and config.data.name == "kjv"
    assert config.resolved["hidden"] == 32 and "hydra" not in config.resolved


def test_a_preset_value_is_reported_under_the_key_that_sets_it():
    register_presets()
    with pytest.raises(ConfigError, match=r"^grid\.hidden=0: must be a positive integer \(the model width\)"):
        run_config("+sweep=stage1_only", "scale=smoke", "grid.hidden=0", base=[])
