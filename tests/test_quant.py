import pytest
import torch
import torch.nn.functional as F

from bitnet.quant import (BitLinear, quantize_activation, quantize_weight, ste_activation, ste_weight,
                          ternary_codes, weight_scale)


def test_weights_land_on_minus_gamma_zero_plus_gamma():
    torch.manual_seed(0)
    w = torch.randn(64, 48) * 0.3
    gamma = w.abs().mean()
    q = quantize_weight(w)
    assert torch.allclose(weight_scale(w), gamma)
    levels = torch.unique(q)
    assert len(levels) == 3
    assert torch.allclose(levels, torch.stack([-gamma, torch.zeros(()), gamma]))
    # round-to-nearest: |w| < gamma/2 -> 0, otherwise sign(w) * gamma
    expected = torch.where(w.abs() < gamma / 2, torch.zeros_like(w), torch.sign(w) * gamma)
    assert torch.allclose(q, expected)
    assert set(ternary_codes(w).unique().tolist()) == {-1.0, 0.0, 1.0}


def test_weight_scale_is_clamped_for_an_all_zero_tensor():
    q = quantize_weight(torch.zeros(4, 4))
    assert torch.equal(q, torch.zeros(4, 4))


def test_activations_land_on_the_per_token_int8_grid():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32) * torch.tensor([0.01, 1.0, 50.0]).view(3, 1, 1)
    q = quantize_activation(x)
    scale = 127.0 / x.abs().amax(-1, keepdim=True)
    codes = q * scale
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().min() >= -128 and codes.round().max() <= 127
    # the largest magnitude of every token maps to exactly +-127
    assert torch.allclose(codes.abs().amax(-1), torch.full((3, 5), 127.0), atol=1e-3)
    # quantization error is at most half a grid step per token
    assert ((q - x).abs() <= 0.5 / scale + 1e-6).all()


def test_straight_through_gradient_is_identity():
    torch.manual_seed(0)
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    upstream = torch.randn(8, 8)
    ste_weight(w).backward(upstream)
    assert torch.equal(w.grad, upstream)
    upstream = torch.randn(4, 8)
    ste_activation(x).backward(upstream)
    assert torch.equal(x.grad, upstream)
    # and the forward values are exactly the reference formulas
    assert torch.equal(ste_weight(w.detach()), quantize_weight(w.detach()))
    assert torch.equal(ste_activation(x.detach()), quantize_activation(x.detach()))


def test_bitlinear_modes_compute_what_they_claim():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16)
    layers = {mode: BitLinear(16, 8, quant=mode) for mode in ("ternary", "weights_only", "none")}
    state = layers["ternary"].state_dict()
    for layer in layers.values():
        layer.load_state_dict(state)
    normed = layers["none"].norm(x)
    w = layers["none"].weight
    assert torch.allclose(layers["none"](x), F.linear(normed, w))
    assert torch.allclose(layers["weights_only"](x), F.linear(normed, quantize_weight(w)))
    assert torch.allclose(layers["ternary"](x), F.linear(quantize_activation(normed), quantize_weight(w)))
    assert not torch.allclose(layers["ternary"](x), layers["none"](x))


def test_bitlinear_without_input_norm_and_bad_mode():
    layer = BitLinear(4, 4, quant="ternary", input_norm=False)
    assert layer.norm is None
    with pytest.raises(ValueError, match="quant='binary'.*ternary, weights_only, none"):
        BitLinear(4, 4, quant="binary")


def test_latent_weights_get_gradients_through_the_quantizer():
    torch.manual_seed(0)
    layer = BitLinear(16, 8)
    layer(torch.randn(4, 16)).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.norm.weight.grad is not None
