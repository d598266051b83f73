"""The optimizer: AdamW with weight decay on matrices only; the `wd` schedule sets the decay every step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from bitnet.keys import Keys


@dataclass(frozen=True)
class OptimConfig:
    """The `optim` config group (defaults in conf/optim/adamw.yaml)."""

    betas: tuple[float, float]   # Adam's (beta1, beta2), each in [0, 1); the BitNet FAQ uses (0.9, 0.95)
    eps: float                   # Adam's epsilon

    @classmethod
    def from_keys(cls, keys: Keys) -> OptimConfig:
        betas = keys.get("betas")
        values = list(betas) if OmegaConf.is_list(betas) or isinstance(betas, (list, tuple)) else None
        if (values is None or len(values) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in values)):
            raise keys.error("betas", betas, "must be two numbers in [0, 1), e.g. [0.9,0.95]")
        return cls(betas=(float(values[0]), float(values[1])),
                   eps=keys.number("eps", 0, None, "a positive number", low_open=True))

    def build(self, model: torch.nn.Module, device: torch.device) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (linear weights, embedding, head) and none on norm gains; the
        schedule sets the decay group's weight_decay every step (fused on CUDA)."""
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        fused = device.type == "cuda"
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.0, "decays": True},
             {"params": no_decay, "weight_decay": 0.0, "decays": False}],
            lr=0.0, betas=self.betas, eps=self.eps, fused=fused or None, foreach=None if fused else True)
