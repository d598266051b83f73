"""`python -m bitnet.bench` on CPU at tiny shapes: the table's rows and columns, never its timings."""

from __future__ import annotations

import torch

from bitnet import bench
from bitnet.quant import quantize_activation, quantize_weight, ste_activation, ste_weight

TINY_BENCH = ["--hidden", "32", "48", "--layers", "1", "--heads", "2", "--batch", "2", "--seq", "16",
              "--vocab", "128", "--steps", "2", "--warmup", "1", "--device", "cpu", "--threads", "1"]


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_bench_prints_ratio_table(capsys):
    table = bench.main(TINY_BENCH)
    out = capsys.readouterr().out
    assert table in out
    assert "device cpu" in out and "torch" in out and "step-time quartiles" in out
    assert "process CPU time per step" in out
    header, rule, *rows = table_rows(table)
    assert header == ["hidden", "params (non-emb)", "ternary ms/step", "dense ms/step", "ternary/dense step time",
                      "ternary tok/s", "dense tok/s", "ternary/dense tok/s"]  # no MFU columns on CPU
    assert all(cell == "---:" for cell in rule)
    assert [row[0] for row in rows] == ["32", "48"]
    for row in rows:
        assert len(row) == len(header)
        step_t, step_d, ratio_step = float(row[2]), float(row[3]), float(row[4])
        tok_t, tok_d, ratio_tok = (float(row[i].replace(",", "")) for i in (5, 6, 7))
        assert step_t > 0 and step_d > 0 and tok_t > 0 and tok_d > 0
        # the ratio is computed from unrounded times: it must lie within the rounding of the printed cells
        half_unit = [0.5 * 10 ** -len(row[i].partition(".")[2]) for i in (2, 3)]
        low = (step_t - half_unit[0]) / (step_d + half_unit[1])
        high = (step_t + half_unit[0]) / (step_d - half_unit[1])
        assert low - 0.0005 <= ratio_step <= high + 0.0005
        assert abs(ratio_tok * ratio_step - 1) < 0.01


def test_mfu_columns_with_a_peak():
    results = [bench.Result(64, "ternary", 0.5, 0.9, (0.4, 0.6), 2000.0, 1e6, 100),
               bench.Result(64, "none", 0.4, 0.7, (0.3, 0.5), 2500.0, 1e6, 100)]
    header, _, row = table_rows(bench.format_table(results, peak_tflops=1.0))
    assert header[-2:] == ["ternary MFU", "dense MFU"]
    assert row[-2:] == ["0.2%", "0.2%"]  # 1e6 FLOP/token * 2000 tok/s / 1e12 = 0.2%; same for dense
    assert row[4] == "1.250" and row[7] == "0.800"


# ---- the quantizers' fast path (autograd Function forwards) equals the reference formulas bit for bit ----

def quantizer_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 48, generator=gen) * torch.logspace(-6, 3, 48)  # widely different magnitudes
    x[0, 0] = 0.0            # an all-zero token: scale clamped
    x[1, 1, :5] = 1e-7       # tiny values next to the clamp
    x[2, 2] = -x[2, 2].abs()  # an all-negative token
    x[3, 3] = torch.arange(48) / 47 * 2 - 1  # values on rounding boundaries
    return [x, x.to(torch.bfloat16), x.double(), torch.randn(7, 33, generator=gen), torch.zeros(3, 5)]


def test_fast_quantizers_equal_reference_bit_for_bit():
    for t in quantizer_inputs():
        assert torch.equal(ste_activation(t), quantize_activation(t)), t.dtype
        assert torch.equal(ste_weight(t), quantize_weight(t)), t.dtype
        assert ste_activation(t).dtype == quantize_activation(t).dtype == t.dtype


def test_fast_quantizers_leave_input_alone_and_pass_gradient_straight_through():
    x = quantizer_inputs()[0].requires_grad_()
    before = x.detach().clone()
    grad = torch.randn_like(x)
    (ste_activation(x) * grad).sum().backward()
    assert torch.equal(x.detach(), before) and torch.equal(x.grad, grad)
    x.grad = None
    (ste_weight(x) * grad).sum().backward()
    assert torch.equal(x.detach(), before) and torch.equal(x.grad, grad)
