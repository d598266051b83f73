"""A LLaMA-like decoder (RMSNorm, rotary embeddings, SwiGLU, no biases) whose attention and FFN linears are
BitLinear. Token embedding, final norm and LM head stay in full precision (the head can be quantized on
request, as a collapse experiment).

Norm placement follows one of the two published layouts:
- "faq": every BitLinear normalises its own input; there are no block pre-norms (Microsoft's FAQ).
- "subln": block pre-norms plus an RMSNorm before the attention output and the FFN down projection, and
  BitLinear only quantizes (microsoft/BitNet gpu/model.py, the 2B4T architecture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitnet.keys import ConfigError, Keys, check_choice
from bitnet.quant import QUANT_MODES, BitLinear, RMSNorm

NORM_PLACEMENTS = ("faq", "subln")
FFN_KINDS = ("swiglu", "relu2")


@dataclass(frozen=True)
class ModelConfig:
    """The `model` config group (defaults in conf/model/*.yaml), plus the two sizes the data decides."""

    vocab_size: int        # tokens in the tokenizer (the corpus decides; data.vocab_size asks for it)
    hidden: int            # model width (`hidden` at the top level, so that `-m hidden=...` sweeps it)
    layers: int            # decoder blocks
    n_heads: int           # attention heads; hidden / n_heads must be even (rotary embeddings)
    max_seq_len: int       # longest input (data.seq_len)
    ffn_dim: int | None    # FFN width; None = 8/3 * hidden rounded up to a multiple of 16
    quant: str             # one of QUANT_MODES: what BitLinear quantizes (bitnet.quant)
    norm: str              # one of NORM_PLACEMENTS: where the RMSNorms go (module docstring)
    ffn: str               # one of FFN_KINDS: the gated FFN's activation
    quantize_head: bool    # quantize the LM head too (a suspected collapse cause; off in the recipe)
    # Collapse suspects (docs/suspects.md); true is the recipe.
    bitlinear_norm: bool   # false: BitLinear quantizes its raw input (LLaMA block pre-norms are used instead)
    clamp_act_scale: bool  # false: absmax activation scale without the clamp away from zero
    latent_weights: bool   # false: weights are overwritten by their ternary value after each update
    rope_theta: float      # rotary base
    norm_eps: float        # RMSNorm epsilon
    init_std: float        # std of the normal initialisation

    @classmethod
    def from_keys(cls, keys: Keys, vocab_size: int, max_seq_len: int) -> ModelConfig:
        return cls(vocab_size=vocab_size, hidden=keys.positive("hidden", "the model width"),
                   layers=keys.positive("layers"), n_heads=keys.positive("n_heads"), max_seq_len=max_seq_len,
                   ffn_dim=keys.positive("ffn_dim", "the FFN width", optional=True),
                   quant=keys.get("quant"), norm=keys.get("norm"), ffn=keys.get("ffn"),  # checked below
                   quantize_head=keys.boolean("quantize_head"), bitlinear_norm=keys.boolean("bitlinear_norm"),
                   clamp_act_scale=keys.boolean("clamp_act_scale"), latent_weights=keys.boolean("latent_weights"),
                   rope_theta=keys.number("rope_theta", 0, None, "a positive number", low_open=True),
                   norm_eps=keys.number("norm_eps", 0, None, "a positive number", low_open=True),
                   init_std=keys.number("init_std", 0, None, "a positive number", low_open=True))

    def __post_init__(self):
        """The invariants, also for a ModelConfig made in Python: known choices, heads of even size."""
        check_choice("model.quant", self.quant, QUANT_MODES)
        check_choice("model.norm", self.norm, NORM_PLACEMENTS, group="model")
        check_choice("model.ffn", self.ffn, FFN_KINDS, group="model")
        hidden, heads = self.hidden, self.n_heads
        if hidden % heads or (hidden // heads) % 2:
            fits = [str(n) for n in head_counts(hidden)]
            why = (f"hidden={hidden} is not divisible by it" if hidden % heads
                   else f"the head size hidden/n_heads={hidden // heads} is odd (rotary embeddings need it even)")
            raise ConfigError(f"model.n_heads={heads}: {why}; allowed for hidden={hidden}: "
                              f"{', '.join(fits) if fits else 'none (use an even hidden)'}")

    def build(self, vocab_size: int | None = None) -> BitNetLM:
        """The model; `vocab_size` is the tokenizer's actual size when it differs from the requested one."""
        return BitNetLM(self if vocab_size is None else replace(self, vocab_size=vocab_size))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def ffn_width(self) -> int:
        """LLaMA's 8/3 * hidden rounded up to a multiple of 16 unless set explicitly."""
        if self.ffn_dim:
            return self.ffn_dim
        return 16 * math.ceil(8 * self.hidden / 3 / 16)


def head_counts(hidden: int, limit: int = 4096) -> list[int]:
    """The n_heads values up to `limit` that split `hidden` into heads of even size (rotary embeddings pair
    the dimensions of a head). Bounded by `limit`, not by `hidden`, so it is instant for any width."""
    return [n for n in range(1, min(hidden, limit) + 1) if hidden % n == 0 and (hidden // n) % 2 == 0]


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def bitlinear(cfg: ModelConfig, n_in: int, n_out: int) -> BitLinear:
    """A projection of a block: in the FAQ layout it normalizes its own input; in 2B4T the sub-norms do."""
    return BitLinear(n_in, n_out, cfg.quant, input_norm=cfg.norm == "faq" and cfg.bitlinear_norm,
                     norm_eps=cfg.norm_eps, clamp_act_scale=cfg.clamp_act_scale)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        linear = partial(bitlinear, cfg)
        self.n_heads = cfg.n_heads
        self.q_proj = linear(cfg.hidden, cfg.hidden)
        self.k_proj = linear(cfg.hidden, cfg.hidden)
        self.v_proj = linear(cfg.hidden, cfg.hidden)
        self.o_proj = linear(cfg.hidden, cfg.hidden)
        self.sub_norm = RMSNorm(cfg.hidden, cfg.norm_eps) if cfg.norm == "subln" else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape

        def heads(t):
            return t.view(batch, seq, self.n_heads, -1).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(x)), cos, sin)
        k = apply_rotary(heads(self.k_proj(x)), cos, sin)
        v = heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(batch, seq, hidden)
        if self.sub_norm is not None:
            out = self.sub_norm(out)
        return self.o_proj(out)


class FeedForward(nn.Module):
    """Gated FFN: down(act(gate(x)) * up(x)) with act = SiLU (SwiGLU) or squared ReLU (2B4T)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        linear = partial(bitlinear, cfg)
        width = cfg.ffn_width
        self.kind = cfg.ffn
        self.gate_proj = linear(cfg.hidden, width)
        self.up_proj = linear(cfg.hidden, width)
        self.down_proj = linear(width, cfg.hidden)
        self.sub_norm = RMSNorm(width, cfg.norm_eps) if cfg.norm == "subln" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        gate = F.silu(gate) if self.kind == "swiglu" else F.relu(gate).square()
        h = gate * self.up_proj(x)
        if self.sub_norm is not None:
            h = self.sub_norm(h)
        return self.down_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # Block pre-norms: 2B4T has them; so does a LLaMA whose linears became norm-free BitLinears.
        prenorm = cfg.norm == "subln" or not cfg.bitlinear_norm
        self.attn_norm = RMSNorm(cfg.hidden, cfg.norm_eps) if prenorm else nn.Identity()
        self.ffn_norm = RMSNorm(cfg.hidden, cfg.norm_eps) if prenorm else nn.Identity()
        self.attn = Attention(cfg)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class BitNetLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.final_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        if cfg.quantize_head:
            self.head = BitLinear(cfg.hidden, cfg.vocab_size, cfg.quant, input_norm=False,
                                  clamp_act_scale=cfg.clamp_act_scale)
        else:
            self.head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init for the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    def forward(self, idx: torch.Tensor, return_hidden: bool = False):
        seq = idx.shape[1]
        if seq > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {seq} tokens is longer than max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        hidden = self.final_norm(x)
        logits = self.head(hidden)
        return (logits, hidden) if return_hidden else logits

    def bitlinear_layers(self) -> dict[str, BitLinear]:
        return {name: m for name, m in self.named_modules() if isinstance(m, BitLinear)}

    def parameter_counts(self) -> dict[str, int]:
        """total, embedding (token embedding) and non_embedding (everything else, LM head included)."""
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embed.weight.numel()
        return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
                "head": self.head.weight.numel()}
