"""The setup check (bitnet.probe.check_setup): the slips users write are flagged before a step is trained, the
recipe and the README's examples are not."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from bitnet.config import RunConfig
from bitnet.probe import Finding, Probe, check_setup
from bitnet.train import Run
from conftest import CONF_DIR, TINY, model_config


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def finding(findings: list[Finding], rule: str) -> Finding:
    return next(f for f in findings if f.rule == rule)


@pytest.fixture
def model():
    return model_config(vocab_size=64, hidden=32, layers=2, n_heads=2, max_seq_len=16).build()


def recipe_groups(model):
    named = list(model.named_parameters())
    return [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]


def test_adam_with_weight_decay_on_every_parameter_is_coupled_and_decays_gains_and_embedding(model):
    findings = check_setup(model, torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=0.1))
    assert rules(findings) == {"coupled_weight_decay", "decay_on_norm_gains", "decay_on_embedding"}
    assert all(f.severity == "error" for f in findings)
    coupled = finding(findings, "coupled_weight_decay")
    assert "Adam with weight_decay=0.1" in coupled.what and "AdamW" in coupled.fix
    # Layer indices are folded: every block's BitLinear input norms make one pattern, the final norm another.
    gains = finding(findings, "decay_on_norm_gains").where
    norms = sum(type(m).__name__ == "RMSNorm" for m in model.modules())  # 7 BitLinear input norms a block, final
    assert gains.startswith("blocks.*.attn.q_proj.norm.weight (2), ") and gains.endswith(f"; {norms} tensors")
    assert finding(findings, "decay_on_embedding").where == "embed.weight; 1 tensors"


def test_adamw_on_every_parameter_decays_norm_gains_but_is_not_coupled(model):
    findings = check_setup(model, torch.optim.AdamW(model.parameters(), lr=1.5e-3))
    assert rules(findings) == {"decay_on_norm_gains"}  # decoupled decay on the embedding is the recipe's
    assert findings[0].severity == "warning"


def test_recipe_groups_and_decoupled_adam_give_no_finding(model):
    assert check_setup(model, torch.optim.AdamW(recipe_groups(model), lr=1.5e-3)) == []
    decoupled = torch.optim.Adam(recipe_groups(model), lr=1.5e-3, decoupled_weight_decay=True)
    assert check_setup(model, decoupled) == []
    # The same groups under coupled Adam: coupled, and the embedding (a matrix) decays coupled.
    assert rules(check_setup(model, torch.optim.Adam(recipe_groups(model), lr=1.5e-3))) == {
        "coupled_weight_decay", "decay_on_embedding"}


def test_sgd_with_weight_decay_is_coupled_and_without_it_is_not():
    net = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10))
    findings = check_setup(net, torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4), lr=1e-3)
    assert rules(findings) == {"coupled_weight_decay", "decay_on_embedding", "decay_on_biases"}
    assert finding(findings, "decay_on_biases").where == "1.bias; 1 tensors"
    assert check_setup(net, torch.optim.SGD(net.parameters(), lr=1e-3)) == []


def test_lr_rule_fires_above_five_times_the_recipe_peak(model):
    optimizer = torch.optim.AdamW(recipe_groups(model), lr=1.5e-3)
    assert check_setup(model, optimizer, lr=7e-3) == []  # 4.7x: below the threshold
    high = check_setup(model, optimizer, lr=1e-2)
    assert rules(high) == {"lr_above_recipe"} and "6.7x the recipe's 0.0015" in high[0].what
    assert high[0].where == "width 32"  # read off the model
    # Wide models use the FAQ's 1.3B+ peak, 1.2e-3.
    assert "0.0012" in check_setup(model, optimizer, lr=7e-3, width=4096)[0].what


def test_quantized_head_and_missing_final_norm(model):
    quantized = model_config(vocab_size=64, hidden=32, layers=1, n_heads=2, max_seq_len=16, quantize_head=True)
    assert rules(check_setup(quantized.build())) == {"quantized_head"}
    model.final_norm = torch.nn.Identity()
    assert rules(check_setup(model)) == {"no_norm_before_head"}
    # A full-precision model without any norm is not judged (its layout cannot be checked without running it).
    assert check_setup(torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10))) == []


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return RunConfig.from_config(compose(config_name="config", overrides=[*TINY, *overrides]))


@pytest.mark.parametrize("overrides, expected", [
    ((), set()),  # bitnet's default run: the recipe
    (("optim=adam_l2", "optim.decay=all"), {"coupled_weight_decay", "decay_on_norm_gains", "decay_on_embedding"}),
    (("+suspect=decay_all",), {"decay_on_norm_gains"}),
])
def test_bitnet_configs_build_the_optimizers_the_check_judges(overrides, expected, tmp_path):
    run = Run(composed(*overrides), tmp_path)
    run.build_training(torch.device("cpu"), 512, torch.randint(0, 512, (4096,)))
    config = run.config
    assert rules(check_setup(run.model, run.optimizer, lr=config.lr.peak, width=config.model.hidden)) == expected


def test_probe_records_the_findings_once(model, tmp_path):
    printed = []
    optimizer = torch.optim.Adam(model.parameters(), lr=1.5e-3, weight_decay=0.1)
    probe = Probe(tmp_path, torch.randint(0, 64, (2000,)), positions=64, seq_len=16, optimizer=optimizer,
                  emit=printed.append)
    probe(model, 0)
    probe(model, 1)
    assert len(printed) == 3 and all(line.startswith("setup check [error] ") for line in printed)
    record = json.loads((tmp_path / "run.json").read_text())
    assert [f["rule"] for f in record["setup_findings"]] == ["coupled_weight_decay", "decay_on_norm_gains",
                                                             "decay_on_embedding"]
    assert set(record["setup_findings"][0]) == {"rule", "what", "where", "why", "fix", "severity"}


def test_readme_examples_give_no_finding():
    """The README's Probe and Lightning models with their AdamW(model.parameters(), lr=3e-3), at width 64."""
    bigram = torch.nn.Sequential(torch.nn.Embedding(4096, 64), torch.nn.Linear(64, 4096))
    assert check_setup(bigram, torch.optim.AdamW(bigram.parameters(), lr=3e-3)) == []


@pytest.mark.slow  # about 2 minutes on the shared 2-core machine
def test_hf_trainer_with_coupled_adam_records_the_finding(tmp_path):
    from test_integrations import VOCAB, hf_run

    ids = torch.arange(3000) * 7 % VOCAB
    hf_run(tmp_path, 32, ids[:2500], ids[2500:], steps=2,
           optimizer=lambda model: torch.optim.Adam(model.parameters(), weight_decay=0.1))
    record = json.loads((tmp_path / "h32" / "run.json").read_text())
    found = {f["rule"]: f for f in record["setup_findings"]}
    assert {"coupled_weight_decay", "decay_on_norm_gains", "decay_on_embedding", "decay_on_biases"} <= set(found)
    assert "ln_f.weight" in found["decay_on_norm_gains"]["where"]
