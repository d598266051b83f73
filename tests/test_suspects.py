"""The collapse suspects (docs/suspects.md): each is off by default and, when switched on, does what its
documentation says."""

import pytest
import torch

from bitnet.model import BitNetLM, ModelConfig
from bitnet.optim import OptimConfig
from bitnet.quant import RMSNorm, drop_latent_weights, quantize_weight, ste_activation
from tests.conftest import model_config

BETA1 = 0.9
LR = 1e-2
WD = 0.1


def tiny(**overrides) -> ModelConfig:
    return model_config(**{"vocab_size": 64, "hidden": 32, "layers": 1, "n_heads": 2, "max_seq_len": 16,
                           **overrides})


def optimizer_for(model, name="adamw", decay="matrices"):
    return OptimConfig(name=name, betas=(BETA1, 0.95), eps=1e-8, decay=decay).build(model, torch.device("cpu"))


def decayed_names(model, optimizer) -> set[str]:
    decaying = {id(p) for g in optimizer.param_groups if g["decays"] for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in decaying}


def one_step(name: str, grad_value: float):
    """One optimizer step with every gradient set to `grad_value` and weight decay WD on the decay group."""
    torch.manual_seed(0)
    model = BitNetLM(tiny())
    optimizer = optimizer_for(model, name)
    before = model.head.weight.detach().clone()
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = LR, WD if group["decays"] else 0.0
    for p in model.parameters():
        p.grad = torch.full_like(p, grad_value)
    optimizer.step()
    return before, model.head.weight.detach(), optimizer.state[model.head.weight]


def test_coupled_l2_adds_wd_times_w_to_the_gradient_adam_sees():
    before, _, state = one_step("adam_l2", grad_value=0.01)
    # Adam's first moment after one step is (1 - beta1) * the gradient it was given
    assert torch.allclose(state["exp_avg"], (1 - BETA1) * (0.01 + WD * before), atol=1e-7)


def test_decoupled_decay_keeps_wd_out_of_the_moments_and_shrinks_the_weight():
    before, after, state = one_step("adamw", grad_value=0.0)
    assert torch.count_nonzero(state["exp_avg"]) == 0
    assert torch.allclose(after, before * (1 - LR * WD))


def test_coupled_l2_with_a_zero_gradient_moves_every_weight_by_a_full_step():
    # Adam normalises wd * w to a unit step: a weight whose loss gradient is zero still moves by ~LR towards 0,
    # however small WD is; AdamW moves it by LR * WD * w
    before, after, _ = one_step("adam_l2", grad_value=0.0)
    clear = before.abs() > 1e-3  # away from weights where wd * w comes near Adam's eps
    assert clear.float().mean() > 0.9
    assert torch.allclose((before - after)[clear], LR * torch.sign(before)[clear], atol=1e-5)


@pytest.mark.parametrize("decay,includes,excludes", [
    ("matrices", {"embed.weight", "head.weight", "blocks.0.attn.q_proj.weight"},
     {"final_norm.weight", "blocks.0.attn.q_proj.norm.weight"}),
    ("all", {"embed.weight", "head.weight", "final_norm.weight", "blocks.0.attn.q_proj.norm.weight"}, set()),
    ("bitlinear", {"blocks.0.attn.q_proj.weight", "blocks.0.ffn.down_proj.weight"},
     {"embed.weight", "head.weight", "final_norm.weight", "blocks.0.attn.q_proj.norm.weight"}),
])
def test_decay_sets(decay, includes, excludes):
    model = BitNetLM(tiny())
    names = decayed_names(model, optimizer_for(model, decay=decay))
    assert includes <= names and not names & excludes
    if decay == "all":
        assert names == {n for n, _ in model.named_parameters()}


def test_bitlinear_without_norm_quantizes_its_raw_input():
    model = BitNetLM(tiny(bitlinear_norm=False))
    layers = model.bitlinear_layers().values()
    assert layers and all(layer.norm is None for layer in layers)
    # a LLaMA whose linears became norm-free BitLinears keeps its block pre-norms
    assert all(isinstance(b.attn_norm, RMSNorm) and isinstance(b.ffn_norm, RMSNorm) for b in model.blocks)
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32)
    plain = model.blocks[0].attn.o_proj
    assert torch.allclose(plain(10 * x), 10 * plain(x), atol=1e-4)  # no norm: the output scales with x
    recipe = BitNetLM(tiny()).blocks[0].attn.o_proj
    assert torch.allclose(recipe(10 * x), recipe(x), atol=1e-4)  # RMSNorm first: scale-invariant
    assert isinstance(BitNetLM(tiny()).blocks[0].attn_norm, torch.nn.Identity)


def test_unclamped_activation_scale_differs_on_zero_and_tiny_tokens():
    zero = torch.zeros(1, 8)
    assert torch.equal(ste_activation(zero), zero)
    assert torch.isnan(ste_activation(zero, clamp_scale=False)).all()  # 0 * (127 / 0)
    torch.manual_seed(0)
    tiny_token = torch.randn(1, 64) * 1e-8
    clamped, unclamped = ste_activation(tiny_token), ste_activation(tiny_token, clamp_scale=False)
    # the clamp puts a token with max|x| below 1e-5 on a grid far coarser than the token: it is flushed to 0
    assert torch.count_nonzero(clamped) == 0
    assert torch.allclose(unclamped, tiny_token, atol=tiny_token.abs().max().item() / 127)
    big = torch.randn(3, 64)
    assert torch.equal(ste_activation(big), ste_activation(big, clamp_scale=False))


def test_model_passes_the_unclamped_scale_to_every_bitlinear():
    model = BitNetLM(tiny(clamp_act_scale=False, quantize_head=True))
    assert not any(layer.clamp_act_scale for layer in model.bitlinear_layers().values())
    assert all(layer.clamp_act_scale for layer in BitNetLM(tiny()).bitlinear_layers().values())


def test_without_latent_weights_small_updates_are_erased():
    torch.manual_seed(0)
    model = BitNetLM(tiny(latent_weights=False))
    layer = model.blocks[0].ffn.up_proj
    latent = layer.weight.detach().clone()
    drop_latent_weights(model.bitlinear_layers().values())
    snapped = layer.weight.detach().clone()
    assert len(snapped.unique()) == 3
    assert torch.allclose(quantize_weight(snapped), quantize_weight(latent))  # the forward pass is unchanged
    drop_latent_weights([layer])
    assert torch.allclose(layer.weight, snapped)  # and snapping is idempotent
    gamma = snapped.abs().max()
    with torch.no_grad():
        layer.weight.add_(0.1 * gamma * torch.randn_like(snapped).sign())  # far below half a rounding step
    drop_latent_weights([layer])
    assert torch.equal(layer.weight.sign(), snapped.sign())  # the update is gone: every code is where it was


def composed(*overrides: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])


@pytest.mark.parametrize("latent", [True, False])
def test_training_steps_keep_or_drop_the_latent_weights(latent):
    from bitnet.train import Run

    run = Run(composed(f"model.latent_weights={str(latent).lower()}"), out_dir=".")
    run.build_training(torch.device("cpu"), 512, torch.randint(0, 512, (4096,)))
    for run.step in range(3):
        run.train_step()
    distinct = [len(layer.weight.unique()) for layer in run.model.bitlinear_layers().values()]
    if latent:
        assert min(distinct) > 3  # the full-precision latent weights the recipe keeps
    else:
        assert max(distinct) <= 3  # -gamma, 0, +gamma after every update
    assert len(run.model.head.weight.unique()) > 3  # the full-precision head is never snapped


def test_the_recipe_is_the_default():
    cfg, l2 = composed(), composed("optim=adam_l2")
    assert (cfg.optim.name, cfg.optim.decay) == ("adamw", "matrices")
    assert (cfg.model.bitlinear_norm, cfg.model.clamp_act_scale, cfg.model.latent_weights) == (True, True, True)
    assert not cfg.model.quantize_head
    assert (l2.optim.name, list(l2.optim.betas)) == ("adam_l2", [0.9, 0.95])
