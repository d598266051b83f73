"""Means with 95% t intervals over seeds, and the 2x2 factorial contrasts. No scipy: the t quantiles are a
table (df <= 30) and the Cornish-Fisher expansion beyond, which is exact to 3 decimals there."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95% interval)."""
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the non-NaN values; the interval is NaN with fewer than two values."""
    x = np.asarray(values, dtype="float64") if isinstance(values, np.ndarray) and values.dtype.kind in "fiub" else \
        pd.to_numeric(pd.Series(values, dtype="float64"), errors="coerce").to_numpy()
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def aggregate(frame: pd.DataFrame, keys: list[str], columns: list[str], nonnegative=()) -> pd.DataFrame:
    """One row per group of `keys`: for each column its mean and, with several points (seeds) in the group,
    `<column>_lo` / `<column>_hi` (95% t interval), plus `n` (points in the group). For the `nonnegative`
    columns (counts, steps) an interval reaching below 0 is cut at 0 and `<column>_clipped` says so: the t
    interval of a few disagreeing seeds (1, 207, 249 tokens) would otherwise promise negative counts."""
    rows = []
    # each column made numeric once and each group's rows found once, then sliced: a frame per group and column
    # cost more than the arithmetic at a few hundred points
    numbers = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64") for c in columns}
    grouped = frame.groupby(keys, dropna=False, sort=False) if keys else None
    codes = grouped.ngroup().to_numpy() if keys else np.zeros(len(frame), dtype=int)
    for code in range(grouped.ngroups if keys else 1):
        rows_of = np.flatnonzero(codes == code)
        row = {k: frame[k].iloc[rows_of[0]] for k in keys}
        for column in columns:
            mean, lo, hi, _ = mean_ci(numbers[column][rows_of])
            if column in nonnegative:
                row[f"{column}_clipped"] = bool(lo < 0)
                lo = max(lo, 0.0) if not math.isnan(lo) else lo
            row[column], row[f"{column}_lo"], row[f"{column}_hi"] = mean, lo, hi
        row["n"] = len(rows_of)
        rows.append(row)
    return pd.DataFrame(rows)


# Cell order of the 2x2 design: (LR switch, WD switch).
CELLS = [(False, False), (True, False), (False, True), (True, True)]
# Effects on the cell means: main effects are the average change from switching one factor on (over the two
# levels of the other); the interaction is the difference of differences, i.e. how much the LR switch's
# effect changes when the WD switch is also on.
CONTRASTS = {
    "LR switch (main effect)": [-0.5, 0.5, -0.5, 0.5],
    "WD switch (main effect)": [-0.5, -0.5, 0.5, 0.5],
    "LR x WD interaction": [1.0, -1.0, -1.0, 1.0],
}


def factorial_effects(values: dict) -> dict:
    """values: {(lr_on, wd_on): [y per seed]} for the four cells. Returns {effect: (estimate, lo, hi, df)}
    with the pooled within-cell variance (df = N - 4); no interval when every cell has a single seed."""
    samples = [np.asarray([v for v in values[cell] if not pd.isna(v)], dtype=float) for cell in CELLS]
    if any(len(s) == 0 for s in samples):
        return {}
    means = np.array([s.mean() for s in samples])
    sizes = np.array([len(s) for s in samples])
    df = int(sizes.sum() - len(samples))
    pooled = sum(((s - s.mean()) ** 2).sum() for s in samples) / df if df > 0 else float("nan")
    out = {}
    for name, coef in CONTRASTS.items():
        coef = np.asarray(coef)
        estimate = float(coef @ means)
        half = t975(df) * math.sqrt(pooled * float((coef**2 / sizes).sum())) if df > 0 else float("nan")
        out[name] = (estimate, estimate - half, estimate + half, df)
    return out
