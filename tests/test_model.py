import pytest
import torch
import torch.nn.functional as F

from bitnet.model import BitNetLM, ModelConfig
from bitnet.quant import BitLinear
from tests.conftest import model_config


def tiny(**overrides) -> ModelConfig:
    return model_config(**{"vocab_size": 64, "hidden": 32, "layers": 2, "n_heads": 4, "max_seq_len": 16,
                           **overrides})


def train_steps(model, steps=30):
    torch.manual_seed(0)
    data = torch.randint(0, 16, (8, 17))  # a small alphabet the model can learn quickly
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits = model(data[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("quant", ["ternary", "weights_only", "none"])
@pytest.mark.parametrize("norm,ffn", [("faq", "swiglu"), ("subln", "relu2")])
def test_every_variant_trains(quant, norm, ffn):
    torch.manual_seed(0)
    model = BitNetLM(tiny(quant=quant, norm=norm, ffn=ffn))
    losses = train_steps(model)
    assert losses[-1] < losses[0] - 0.5


def test_ternary_and_none_share_the_architecture():
    torch.manual_seed(0)
    ternary = BitNetLM(tiny(quant="ternary"))
    dense = BitNetLM(tiny(quant="none"))
    assert ternary.parameter_counts() == dense.parameter_counts()
    dense.load_state_dict(ternary.state_dict())
    idx = torch.randint(0, 64, (2, 16))
    assert not torch.allclose(ternary(idx), dense(idx))
    for layer in dense.bitlinear_layers().values():
        layer.quant = "ternary"
    assert torch.allclose(ternary(idx), dense(idx))


def test_full_precision_parts_and_bitlinear_placement():
    model = BitNetLM(tiny())
    names = set(model.bitlinear_layers())
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down per block
    assert type(model.head) is torch.nn.Linear and type(model.embed) is torch.nn.Embedding
    assert all(layer.norm is not None for layer in model.bitlinear_layers().values())  # FAQ layout
    subln = BitNetLM(tiny(norm="subln"))
    assert all(layer.norm is None for layer in subln.bitlinear_layers().values())
    assert isinstance(BitNetLM(tiny(quantize_head=True)).head, BitLinear)


def test_parameter_counts_and_causality():
    torch.manual_seed(0)
    model = BitNetLM(tiny())
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == 64 * 32 and counts["non_embedding"] == counts["total"] - 64 * 32
    idx = torch.randint(0, 64, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 64
    # changing token 10 may not affect predictions at positions before it
    assert torch.allclose(model(idx)[0, :10], model(changed)[0, :10], atol=1e-5)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="model.n_heads=4: hidden=30 is not divisible by it; allowed for "
                                         "hidden=30: 1, 3, 5, 15"):
        tiny(hidden=30)
    with pytest.raises(ValueError, match=r"model.norm=post: expected one of faq, subln"):
        tiny(norm="post")
