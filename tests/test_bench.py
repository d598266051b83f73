"""`python -m bitnet.bench` on CPU at tiny shapes: the table's rows and columns, never its timings."""

from __future__ import annotations

from bitnet import bench

TINY_BENCH = ["--hidden", "32", "48", "--layers", "1", "--heads", "2", "--batch", "2", "--seq", "16",
              "--vocab", "128", "--steps", "2", "--warmup", "1", "--device", "cpu", "--threads", "1"]


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_bench_prints_ratio_table(capsys):
    table = bench.main(TINY_BENCH)
    out = capsys.readouterr().out
    assert table in out
    assert "device cpu" in out and "torch" in out
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
        assert abs(ratio_step - step_t / step_d) < 0.01 * ratio_step + 0.002  # rounding of the printed cells
        assert abs(ratio_tok * ratio_step - 1) < 0.01


def test_mfu_columns_with_a_peak():
    results = [bench.Result(64, "ternary", 0.5, 2000.0, 1e6, 100), bench.Result(64, "none", 0.4, 2500.0, 1e6, 100)]
    header, _, row = table_rows(bench.format_table(results, peak_tflops=1.0))
    assert header[-2:] == ["ternary MFU", "dense MFU"]
    assert row[-2:] == ["0.2%", "0.2%"]  # 1e6 FLOP/token * 2000 tok/s / 1e12 = 0.2%; same for dense
    assert row[4] == "1.250" and row[7] == "0.800"
