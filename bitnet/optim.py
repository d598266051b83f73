"""The optimizer: AdamW (or, as a collapse suspect, Adam with coupled L2) with weight decay on a chosen set of
parameters; the `wd` schedule sets the decay every step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from bitnet.keys import Keys

OPTIMIZERS = ("adamw", "adam_l2")
# Which parameters the weight-decay schedule applies to. "matrices" is the recipe (every weight matrix:
# BitLinear weights, embedding, head; never norm gains); the others are collapse suspects (docs/suspects.md).
DECAY_SETS = ("matrices", "all", "bitlinear")


def decays(name: str, p: torch.nn.Parameter, decay: str) -> bool:
    if decay == "all":
        return True
    if decay == "bitlinear":
        return p.dim() >= 2 and name.startswith("blocks.")
    return p.dim() >= 2


@dataclass(frozen=True)
class OptimConfig:
    """The `optim` config group (defaults in conf/optim/adamw.yaml)."""

    name: str                    # one of OPTIMIZERS: adamw (decoupled decay, the recipe) or adam_l2 (coupled L2)
    betas: tuple[float, float]   # Adam's (beta1, beta2), each in [0, 1); the BitNet FAQ uses (0.9, 0.95)
    eps: float                   # Adam's epsilon
    decay: str                   # one of DECAY_SETS: the parameters the wd schedule decays

    @classmethod
    def from_keys(cls, keys: Keys) -> OptimConfig:
        betas = keys.get("betas")
        values = list(betas) if OmegaConf.is_list(betas) or isinstance(betas, (list, tuple)) else None
        if (values is None or len(values) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in values)):
            raise keys.error("betas", betas, "must be two numbers in [0, 1), e.g. [0.9,0.95]")
        return cls(name=keys.choice("name", OPTIMIZERS, group="optim"),
                   betas=(float(values[0]), float(values[1])),
                   eps=keys.number("eps", 0, None, "a positive number", low_open=True),
                   decay=keys.choice("decay", DECAY_SETS))

    def build(self, model: torch.nn.Module, device: torch.device, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW (decoupled decay) or Adam with coupled L2 (`adam_l2`: the gradient the moments see is
        grad + wd * w, as torch.optim.Adam(weight_decay=...)). `decay` picks the parameters that decay; the
        schedule sets the decay group's weight_decay every step (fused on CUDA); `weight_decay` is its value
        until then (the first step's, so that the setup check sees the optimizer as it will train)."""
        named = list(model.named_parameters())
        decay = [p for n, p in named if decays(n, p, self.decay)]
        no_decay = [p for n, p in named if not decays(n, p, self.decay)]
        fused = device.type == "cuda"
        optimizer = torch.optim.Adam if self.name == "adam_l2" else torch.optim.AdamW
        return optimizer(
            [{"params": decay, "weight_decay": weight_decay, "decays": True},
             {"params": no_decay, "weight_decay": 0.0, "decays": False}],
            lr=0.0, betas=self.betas, eps=self.eps, fused=fused or None, foreach=None if fused else True)
