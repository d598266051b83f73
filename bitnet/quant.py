"""BitNet b1.58 fake quantization (training time), as in Microsoft's "Training Tips, Code and FAQ".

Weights: per-tensor absmean scale gamma, codes clip(round(W / gamma), -1, 1), dequantized back (* gamma)
before the matmul. Activations: per-token absmax scale to the symmetric int8 grid, dequantized back.
Both use the straight-through estimator: the forward is the quantized value, the backward is the identity.

The quantizers are autograd Functions whose backward returns the incoming gradient untouched. That is the
STE of `x + (q(x) - x).detach()` without keeping `x` alive for the backward, and it compiles into a single
fused kernel under torch.compile.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

QUANT_MODES = ("ternary", "weights_only", "none")
SCALE_EPS = 1e-5


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """gamma = mean(|W|), clamped away from zero."""
    return w.abs().mean().clamp(min=SCALE_EPS)


def ternary_codes(w: torch.Tensor) -> torch.Tensor:
    """The integer codes in {-1, 0, +1} that the forward pass uses for `w` (for diagnostics and tests)."""
    return (w / weight_scale(w)).round().clamp(-1, 1)


def quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """Reference formula: clip(round(W / gamma), -1, 1) * gamma."""
    gamma = weight_scale(w)
    return (w / gamma).round().clamp(-1, 1) * gamma


def quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """Reference formula, per token (last dim): s = 127 / max|x|; clip(round(x * s), -128, 127) / s."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=SCALE_EPS)
    return (x * scale).round().clamp(-128, 127) / scale


class _WeightSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        # quantize_weight's formula, op for op, with the elementwise steps done in place on the one fresh
        # tensor `w / gamma` (bit-identical; fewer full-size temporaries in eager mode).
        gamma = w.abs().mean().clamp_(min=SCALE_EPS)
        return (w / gamma).round_().clamp_(-1, 1).mul_(gamma)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ActivationSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        # quantize_activation's formula, op for op, in place on the one fresh tensor `x * scale`
        # (bit-identical; on CPU the reference's four full-size temporaries cost more than the matmul at
        # small widths). eps=0 is the unclamped suspect: an all-zero token gives 0 * inf = NaN.
        scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_(min=eps)
        return (x * scale).round_().clamp_(-128, 127).div_(scale)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ste_weight(w: torch.Tensor) -> torch.Tensor:
    return _WeightSTE.apply(w)


def ste_activation(x: torch.Tensor, clamp_scale: bool = True) -> torch.Tensor:
    """clamp_scale=False: the absmax scale is not kept away from zero (a collapse suspect)."""
    return _ActivationSTE.apply(x, SCALE_EPS if clamp_scale else 0.0)


@torch.no_grad()
def drop_latent_weights(layers) -> None:
    """Overwrite each weight-quantizing BitLinear's latent weight with a ternary tensor: its codes times the one
    magnitude that keeps mean|W|, so the forward pass (quantize_weight) is unchanged and snapping again changes
    nothing. This is what training with no full-precision latent copy amounts to: an update smaller than half
    a rounding step is erased at the next call instead of accumulating."""
    for layer in layers:
        if layer.quantizes_weights:
            w = layer.weight
            codes = ternary_codes(w)
            w.copy_(codes * (w.abs().mean() / codes.abs().mean().clamp(min=SCALE_EPS)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under bf16 autocast: the int8 activation grid is set by max|x| after this.
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight).to(x.dtype)


class BitLinear(nn.Linear):
    """nn.Linear with BitNet b1.58 fake quantization and, in the FAQ layout, its own input RMSNorm.

    quant: "ternary" (weights and activations), "weights_only" (activations left in full precision, the
    TriLM/Spectra control) or "none" (plain linear: the full-precision control with the same architecture).
    """

    def __init__(self, in_features: int, out_features: int, quant: str = "ternary",
                 input_norm: bool = True, norm_eps: float = 1e-6, clamp_act_scale: bool = True):
        super().__init__(in_features, out_features, bias=False)
        if quant not in QUANT_MODES:
            raise ValueError(f"quant={quant!r}: expected one of {', '.join(QUANT_MODES)}")
        self.quant = quant
        self.clamp_act_scale = clamp_act_scale
        self.norm = RMSNorm(in_features, norm_eps) if input_norm else None

    @property
    def quantizes_weights(self) -> bool:
        return self.quant != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.quant == "ternary":
            x = ste_activation(x, self.clamp_act_scale)
        w = ste_weight(self.weight) if self.quantizes_weights else self.weight
        return F.linear(x, w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}, input_norm={self.norm is not None}"
