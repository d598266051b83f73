import math

import torch

from bitnet.metrics import logits_diversity, prediction_diversity


def one_hot_logits(predicted: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(predicted), vocab)
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 5.0
    return logits


def test_collapsed_predictions():
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    m = logits_diversity(one_hot_logits([3] * 8), targets)
    assert m["unique_tokens"] == 1
    assert m["unique_targets"] == 8
    assert m["pred_entropy"] == 0.0
    assert m["top1_share"] == 1.0


def test_two_token_collapse_and_known_entropy():
    predictions = torch.tensor([0, 0, 0, 1])
    m = prediction_diversity(predictions, torch.tensor([0, 1, 1, 1]))
    assert m["unique_tokens"] == 2 and m["unique_targets"] == 2
    assert math.isclose(m["pred_entropy"], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert m["top1_share"] == 0.75


def test_diverse_predictions_and_eval_loss():
    targets = torch.tensor([0, 1, 2, 3])
    logits = one_hot_logits([0, 1, 2, 3], vocab=4)
    m = logits_diversity(logits, targets)
    assert m["unique_tokens"] == 4 and math.isclose(m["pred_entropy"], math.log(4))
    expected_loss = -torch.log_softmax(logits, -1)[0, 0].item()
    assert math.isclose(m["eval_loss"], expected_loss, rel_tol=1e-6)
    uniform = logits_diversity(torch.zeros(4, 4), targets)
    assert math.isclose(uniform["eval_loss"], math.log(4), rel_tol=1e-6)
