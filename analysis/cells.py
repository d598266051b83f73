"""Cells over seeds: what the tables share. A cell is a group of points that differ only in their seed
(analysis.measures.cell_keys); numbers become `mean [lo, hi]`, labels `x 2/3, y 1/3`."""

from __future__ import annotations

import re

import pandas as pd

from analysis.fmt import NA, fmt_value
from analysis.stats import aggregate


def statuses(block: pd.Series) -> str:
    counts = block.value_counts()
    if len(block) == 1:
        return str(block.iloc[0])
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def per_cell(frame: pd.DataFrame, keys: list[str], column: str, summary) -> list[str]:
    """`summary` of each cell's values of a text column, cells in first-appearance order."""
    if not keys:
        return [summary(list(frame[column]))]
    # plain lists per cell: a Series per cell and column cost more than the summaries at a few hundred points
    codes = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    lists = [[] for _ in range(int(codes.max()) + 1 if len(codes) else 0)]
    for code, value in zip(codes, frame[column].tolist()):
        lists[code].append(value)
    return [summary(values) for values in lists]


# The per-point columns that count tokens, steps or parameters (or are ratios of counts): their intervals stop
# at 0 (analysis.stats.aggregate). Drops, % changes, loss gaps and cosines can be negative and are left alone.
COUNTS = re.compile(r"tokens|step|plateau_start|^(first_collapse|lowest_stage1|after_switch|params|non_embedding|"
                    r"positions|distinct_targets|recovery|recovery_factor|ratio)$")
CLIPPED_NOTE = ("0† = the 95% interval reached below 0 and is cut there: counts and steps cannot be negative (the "
                "seeds disagree too much for a t interval to mean much).")


def cells(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean [95% interval] per cell, the points' statuses and the number of seeds."""
    table = aggregate(frame, keys, columns, nonnegative=[c for c in columns if COUNTS.search(c)])
    table["status"] = per_cell(frame, keys, "status", lambda s: statuses(pd.Series(s)))
    return table


def keys_display(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame({k: [fmt_value(v) for v in table[k]] for k in keys}, index=table.index)


def verdicts_over_seeds(block: pd.Series) -> str:
    """Seeds' verdicts of one cell: the tags as they are for one seed, `tag (k/n seeds)` for several."""
    lists = [v.split("; ") for v in block if v and v != NA]
    if not lists:
        return NA
    if len(lists) == 1:
        return "; ".join(lists[0])
    tags = list(dict.fromkeys(t for tags in lists for t in tags))
    return "; ".join(f"{t} ({sum(t in tags for tags in lists)}/{len(lists)} seeds)" for t in tags)


def tokens_with_phase(tokens, phase: str) -> str:
    """"2 tokens, near-uniform": a collapse is never shown without the phase it happened in."""
    if pd.isna(tokens):
        return NA
    return f"{fmt_value(tokens, 'tokens')}, {phase}" if phase and phase != NA else fmt_value(tokens, "tokens")
