"""The token-diversity metric: how many different next tokens does the model predict (argmax) over a fixed
set of held-out positions, against how many different tokens actually come next there (the ceiling)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def prediction_diversity(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """predictions, targets: 1-D integer tensors over the same positions.

    unique_tokens   distinct argmax predictions (the seeds' "unique tokens")
    unique_targets  distinct tokens that actually follow (the most unique_tokens can meaningfully reach)
    pred_entropy    entropy in nats of the histogram of predicted tokens (0 when one token is predicted)
    top1_share      share of positions that get the most frequent prediction
    """
    predictions, targets = predictions.flatten().cpu(), targets.flatten().cpu()
    _, counts = predictions.unique(return_counts=True)
    share = counts.double() / predictions.numel()
    entropy = float(-(share * share.log()).sum())
    return {
        "unique_tokens": int(counts.numel()),
        "unique_targets": int(targets.unique().numel()),
        "pred_entropy": abs(entropy),  # avoid printing -0.0 when a single token is predicted
        "top1_share": float(share.max()),
    }


def logits_diversity(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """eval_loss (mean cross-entropy in nats) and the diversity metric from logits of shape (N, vocab)."""
    loss = F.cross_entropy(logits.float(), targets, reduction="mean")
    return {"eval_loss": float(loss), **prediction_diversity(logits.argmax(-1), targets)}


def effective_tokens(pred_entropy: float) -> float:
    return math.exp(pred_entropy)
