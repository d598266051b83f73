import math

import pytest
import torch

from bitnet.diagnostics import (CosineAccumulator, WeightTracker, distinct_n, generate, mean_pairwise_cosine,
                                parameter_group_rms, repeated_ngram_rate, text_diversity, unigram_entropy)
from bitnet.model import BitNetLM
from bitnet.quant import BitLinear, ternary_codes
from tests.conftest import model_config


def test_identical_hidden_states_have_cosine_one_and_opposite_ones_minus_one():
    same = torch.randn(1, 16).repeat(50, 1) * torch.rand(50, 1)  # same direction, any length
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    pair = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(pair) == pytest.approx(-1.0)
    orthogonal = torch.eye(8)
    assert mean_pairwise_cosine(orthogonal) == pytest.approx(0.0, abs=1e-9)


def test_cosine_accumulates_over_batches_like_the_full_matrix():
    torch.manual_seed(0)
    vectors = torch.randn(40, 8) + 0.5
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    sims = unit @ unit.T
    expected = (sims.sum() - sims.diagonal().sum()) / (40 * 39)
    acc = CosineAccumulator()
    for chunk in vectors.split(7):
        acc.add(chunk)
    assert acc.value() == pytest.approx(float(expected), rel=1e-5)


def test_flip_rate_counts_exactly_the_codes_you_flip():
    torch.manual_seed(0)
    layer = BitLinear(20, 10)
    tracker = WeightTracker({"layer": layer})
    first, per_layer = tracker.measure()
    assert first["flip_rate"] is None and per_layer[0].get("flip_rate") is None
    codes = ternary_codes(layer.weight.detach())
    gamma = layer.weight.detach().abs().mean()
    # move 13 weights whose code is 0 deep into +1 territory, and compensate elsewhere so gamma stays put
    zero_idx = (codes.flatten() == 0).nonzero().flatten()[:13]
    with torch.no_grad():
        flat = layer.weight.view(-1)
        before = flat.abs().sum()
        flat[zero_idx] = 1.5 * gamma
        flat.mul_(before / flat.abs().sum())
    new_codes = ternary_codes(layer.weight.detach())
    expected = int((new_codes != codes).sum()) / codes.numel()
    assert expected >= 13 / 200
    second, _ = tracker.measure()
    assert second["flip_rate"] == pytest.approx(expected)
    assert second["zero_frac"] == pytest.approx(float((new_codes == 0).float().mean()))
    third, _ = tracker.measure()
    assert third["flip_rate"] == 0.0


def test_full_precision_layers_leave_ternary_columns_empty():
    tracker = WeightTracker({"dense": BitLinear(8, 8, quant="none")})
    tracker.measure()
    together, per_layer = tracker.measure()
    assert together["zero_frac"] is None and together["flip_rate"] is None
    assert together["latent_rms"] > 0 and "zero_frac" not in per_layer[0]


def test_unigram_entropy_of_known_texts():
    assert unigram_entropy(torch.tensor([3, 3, 3, 3]), 10) == pytest.approx(0.0)
    assert unigram_entropy(torch.tensor([0, 1, 2, 3]), 10) == pytest.approx(math.log(4))
    assert unigram_entropy(torch.tensor([0, 0, 0, 1]), 2) == pytest.approx(-(0.75 * math.log(0.75)
                                                                               + 0.25 * math.log(0.25)))


def test_distinct_n_and_repeated_ngrams_of_known_sequences():
    of_of = [7] * 10
    assert distinct_n(of_of, 1) == pytest.approx(0.1) and distinct_n(of_of, 2) == pytest.approx(1 / 9)
    assert repeated_ngram_rate(of_of, 3) == pytest.approx(7 / 8)
    fresh = list(range(10))
    assert distinct_n(fresh, 1) == 1.0 and repeated_ngram_rate(fresh, 3) == 0.0
    abab = [1, 2, 1, 2, 1, 2]  # trigrams: 121 212 121 212 -> two repeats
    assert repeated_ngram_rate(abab, 3) == pytest.approx(0.5)
    report = text_diversity([of_of, fresh], "greedy")
    assert report["greedy_distinct1"] == pytest.approx(0.55)


def test_sampling_does_not_move_the_training_rng():
    torch.manual_seed(0)
    model = BitNetLM(model_config(vocab_size=50, hidden=16, layers=1, n_heads=2, max_seq_len=8))
    prompts = torch.randint(0, 50, (2, 4))
    state = torch.get_rng_state()
    from contextlib import nullcontext
    first = generate(model, prompts, 12, 1.0, seed=5, autocast=nullcontext)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, generate(model, prompts, 12, 1.0, seed=5, autocast=nullcontext))
    greedy = generate(model, prompts, 12, None, seed=0, autocast=nullcontext)  # longer than max_seq_len
    assert greedy.shape == (2, 12)


def rms(t: torch.Tensor) -> float:
    return float(t.detach().square().mean().sqrt())


def test_parameter_group_rms_names_each_group_of_bitnets_model():
    torch.manual_seed(0)
    model = BitNetLM(model_config(hidden=16, layers=2, n_heads=2, vocab_size=50))
    groups = parameter_group_rms(model)
    assert groups["embed_rms"] == pytest.approx(rms(model.embed.weight), rel=1e-6)
    assert groups["head_rms"] == pytest.approx(rms(model.head.weight), rel=1e-6)
    assert groups["norm_gain_rms"] == pytest.approx(1.0) and groups["final_norm_rms"] == pytest.approx(1.0)
    with torch.no_grad():  # what decay on every parameter does to the final norm's gain, and only to it here
        model.final_norm.weight.mul_(0.25)
    shrunk = parameter_group_rms(model)
    assert shrunk["final_norm_rms"] == pytest.approx(0.25)
    gains = [m.weight for m in model.modules() if type(m).__name__ == "RMSNorm"]
    expected = math.sqrt(sum(float(g.detach().square().sum()) for g in gains) / sum(g.numel() for g in gains))
    assert shrunk["norm_gain_rms"] == pytest.approx(expected) and 0.25 < expected < 1


def test_parameter_group_rms_on_a_foreign_model_with_tied_head_and_layernorm():
    class Tiny(torch.nn.Module):  # GPT-2's layout: wte, a LayerNorm, ln_f, an lm_head tied to wte
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(30, 8)
            self.ln_1 = torch.nn.LayerNorm(8)
            self.ln_f = torch.nn.LayerNorm(8)
            self.lm_head = torch.nn.Linear(8, 30, bias=False)
            self.lm_head.weight = self.wte.weight

    model = Tiny()
    with torch.no_grad():
        model.ln_f.weight.fill_(0.5)
    groups = parameter_group_rms(model)
    assert groups["head_rms"] == groups["embed_rms"] == pytest.approx(rms(model.wte.weight))
    assert groups["final_norm_rms"] == pytest.approx(0.5)
    assert groups["norm_gain_rms"] == pytest.approx(math.sqrt((1 + 0.25) / 2))
    assert parameter_group_rms(torch.nn.Linear(3, 3)) == {"embed_rms": None, "head_rms": None,
                                                          "norm_gain_rms": None, "final_norm_rms": None}
