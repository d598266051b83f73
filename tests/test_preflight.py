"""The preflight estimates: arithmetic on the config that must stay a lower bound of what a run really uses
(so a refused point certainly does not fit), and fast for any size."""

from __future__ import annotations

import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from bitnet.config import RunConfig
from bitnet.preflight import check_disk, check_memory, disk_needed, memory_needed, parameter_count
from tests.conftest import CONF_DIR, TINY


def composed(*changes: str) -> RunConfig:
    keys = {c.split("=", 1)[0] for c in changes}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return RunConfig.from_config(compose(config_name="config", overrides=[
            o for o in TINY if o.split("=", 1)[0] not in keys] + list(changes)))


@pytest.mark.parametrize("changes", [
    [],
    ["hidden=96", "model.layers=3", "model.n_heads=4"],
    ["model=bitnet_2b4t", "hidden=64", "model.layers=2"],
    ["model.ffn_dim=100", "model.quantize_head=true"],
    ["data.vocab_size=4096", "hidden=128", "model.n_heads=4"],
], ids=["tiny", "deeper", "2b4t", "ffn_dim-quantized_head", "large-vocab"])
def test_parameter_count_is_a_tight_lower_bound_of_the_model(changes):
    cfg = composed(*changes)
    actual = cfg.model.build(cfg.data.vocab_size).parameter_counts()["total"]
    estimate = parameter_count(cfg)
    assert 0.95 * actual <= estimate <= actual, (estimate, actual)  # only the norm gains are left out


def test_memory_estimate_counts_weights_activations_and_evaluation_logits():
    cfg = composed()
    need = memory_needed(cfg, torch.device("cpu"))
    assert need["weights"] == 16 * parameter_count(cfg)
    # TINY: batch 8 x 32 tokens, vocabulary 512, one layer of width 32 and FFN width 96 (8/3 * 32 rounded up to 16).
    assert need["activations"] == 8 * 32 * (2 * 512 * 4 + 1 * (4 * 32 + 3 * 96) * 4)
    assert need["evaluation"] == cfg.eval.batch_size * 32 * 512 * 4
    bf16 = memory_needed(composed("precision=bf16"), torch.device("cpu"))
    assert bf16["activations"] == 8 * 32 * (2 * 512 * 4 + 1 * (4 * 32 + 3 * 96) * 2)


def test_checks_pass_the_default_and_are_instant_for_absurd_sizes(tmp_path):
    check_memory(composed(), torch.device("cpu"))
    check_disk(composed(), tmp_path / "not" / "made" / "yet")  # measured on the nearest existing folder
    for hidden in (10**9, 10**15, 10**30):
        cfg = composed(f"hidden={hidden}")
        tic = time.perf_counter()
        with pytest.raises(ValueError, match=f"^hidden={hidden}: this point needs at least"):
            check_memory(cfg, torch.device("cpu"))
        assert time.perf_counter() - tic < 0.1


def test_disk_estimate_grows_with_evaluations_and_checkpoints():
    rows_only = disk_needed(composed("train.checkpoint_every=0"))
    assert rows_only["checkpoints"] == 0
    # 20 steps every 10: evaluations at 0, 10, 20 (counted with one to spare); one layer = 7 BitLinears.
    assert rows_only["rows"] == (20 // 10 + 2) * (100 + 7 * 30)
    with_checkpoints = disk_needed(composed())
    assert with_checkpoints["checkpoints"] == 2 * 12 * parameter_count(composed())
