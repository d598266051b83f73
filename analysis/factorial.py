"""Two-level factorial effects: for a sweep whose cell keys (every swept key but the seed) each take exactly two
values, the main effect of each key and every two-way interaction on the collapse signature's parts (per run,
analysis.release) and on the final eval loss and unique tokens, with 95% t intervals.

    effect of A      mean response over the cells at A's second value - over the cells at its first value
                     (values in the order the sweep declares them)
    interaction AxB  the same with the product of A's and B's signs (-1 first value, +1 second): half of (A's
                     effect where B is at its second value - A's effect where B is at its first value)
    interval         estimate +- t(0.975, df) x sqrt(s2 x sum_c w_c^2 / n_c), s2 the pooled within-cell variance
                     of the completed points, df = N - cells, w_c = +-2 / cells the cell's weight

The design may be the full 2^K grid or a regular fraction of it (every effect column balanced, the cells
closed under the defining relation); a fraction's aliases are listed beside each effect. A grid that is neither
is refused, naming the cells it lacks; so is a grid with a cell that has no completed point yet.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from analysis.fmt import NA, fmt_cell, fmt_value
from analysis.stats import t975

# (per-point column, header, number format): the responses, the signature's parts first.
RESPONSES = [("signature_plateau_fraction", "plateau share of stage 1", "effect"),
             ("signature_stage1_rise", "stage-1 loss rise (nats)", "effect"),
             ("signature_release_drop", "release over the window (nats)", "effect"),
             ("final_eval_loss", "final eval loss", "effect"),
             ("final_tokens", "final unique tokens", "drop")]


class NotFactorial(ValueError):
    """Why the sweep has no effects table (one line)."""


def _word(names: list[str], word: tuple[int, ...]) -> str:
    return " x ".join(names[i] for i in word)


def design(pp: pd.DataFrame, keys: list[str]) -> dict:
    """The two-level design of the grid (every point, finished or not): {factors, levels, cells (sign tuples
    of the grid's cells), words (the defining relation: the factor sets whose sign product is constant)}.
    Raises NotFactorial when it is not a full factorial or regular fraction over 2+ keys."""
    if len(keys) < 2:
        raise NotFactorial("needs two or more swept keys (besides seed), each with exactly two values")
    levels = {k: list(dict.fromkeys(_norm(v) for v in pp[k])) for k in keys}
    many = [f"{k} takes {len(v)} values ({', '.join(fmt_value(x) for x in v)})" for k, v in levels.items() if len(v) != 2]
    if many:
        raise NotFactorial(f"every swept key but seed must take exactly two values: {'; '.join(many)}")
    signs = sorted({tuple(-1 if _norm(v) == _norm(levels[k][0]) else 1 for k, v in zip(keys, row))
                    for row in pp[keys].itertuples(index=False)})
    k = len(keys)
    words = [w for r in range(1, k + 1) for w in itertools.combinations(range(k), r)
             if len({math.prod(c[i] for i in w) for c in signs}) == 1]
    regular = len(signs) & (len(signs) - 1) == 0 and (len(words) + 1) * len(signs) == 2 ** k
    if not regular:
        absent = [_cell_text(keys, levels, c) for c in itertools.product((-1, 1), repeat=k) if c not in signs]
        raise NotFactorial(f"the grid's {len(signs)} cells are neither the full 2^{k} factorial nor a regular "
                           f"fraction of it; missing: {'; '.join(absent)}")
    return {"factors": keys, "levels": levels, "cells": signs, "words": words}


def _cell_text(keys: list[str], levels: dict, cell: tuple[int, ...]) -> str:
    """A cell as the overrides that make it: `optim.name=adam_l2, optim.decay=all`."""
    return ", ".join(f"{k}={fmt_value(levels[k][(s + 1) // 2])}" for k, s in zip(keys, cell))


def _norm(value):
    """A config value as a level: hashable (a list such as optim.betas as its repr), NaN as None."""
    if isinstance(value, (list, dict)):
        return repr(value)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def aliases(effect: tuple[int, ...], words: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The effects that share `effect`'s contrast in a fraction: effect x word for each word of the defining
    relation (symmetric difference of the factor sets); () is the grand mean."""
    return sorted({tuple(sorted(set(effect) ^ set(w))) for w in words}, key=lambda w: (len(w), w))


def effects(values: dict, word: tuple[int, ...]) -> tuple[float, float, float, int]:
    """values: {sign tuple: [response per completed point]}; (estimate, lo, hi, df) of the contrast `word`."""
    samples = {c: np.asarray([v for v in vs if not pd.isna(v)], dtype=float) for c, vs in values.items()}
    m = len(samples)
    means = {c: s.mean() for c, s in samples.items()}
    weight = {c: math.prod(c[i] for i in word) * 2 / m for c in samples}
    estimate = float(sum(weight[c] * means[c] for c in samples))
    df = int(sum(len(s) for s in samples.values()) - m)
    if df < 1:
        return estimate, float("nan"), float("nan"), df
    pooled = sum(((s - s.mean()) ** 2).sum() for s in samples.values()) / df
    half = t975(df) * math.sqrt(pooled * sum(weight[c] ** 2 / len(samples[c]) for c in samples))
    return estimate, estimate - half, estimate + half, df


def effects_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(markdown, csv, notes) of the main effects and two-way interactions. Raises NotFactorial with the reason
    when the sweep is not a two-level factorial with a completed point in every cell."""
    d = design(pp, keys)
    levels, names = d["levels"], keys
    sign = pp[keys].apply(lambda row: tuple(-1 if _norm(v) == _norm(levels[k][0]) else 1
                                            for k, v in zip(keys, row)), axis=1)
    done = pp.status == "completed"
    lacking = [c for c in d["cells"] if not (done & (sign == c)).any()]
    if lacking:
        shown = [f"{_cell_text(keys, levels, c)} ({', '.join(dict.fromkeys(pp.status[sign == c])) or 'missing'})"
                 for c in lacking]
        raise NotFactorial(f"no completed point yet in {len(lacking)} of the {len(d['cells'])} cells: {'; '.join(shown)}")
    # per response: the completed points' values in each cell, and the cells where none has a value
    values = {column: {c: list(pp[column][done & (sign == c)]) for c in d["cells"]} for column, _, _ in RESPONSES}
    empty = {column: [c for c, vs in cells.items() if all(pd.isna(v) for v in vs)] for column, cells in values.items()}
    rows, notes = [], []
    effect_words = [(i,) for i in range(len(keys))] + list(itertools.combinations(range(len(keys)), 2))
    for word in effect_words:
        kind = "main" if len(word) == 1 else "two-way"
        label = (f"{keys[word[0]]}: {fmt_value(levels[keys[word[0]]][0])} → {fmt_value(levels[keys[word[0]]][1])}"
                 if kind == "main" else _word(names, word))
        others = [a for a in aliases(word, d["words"]) if a != word]
        row = {"effect": label, "kind": kind,
               "aliases": "; ".join("the grand mean" if not a else _word(names, a) for a in others if len(a) <= 2
                                    or not a) + ("; higher-order" if any(len(a) > 2 for a in others) else "")}
        for column, _, _ in RESPONSES:
            if empty[column] or () in others:
                row.update({column: float("nan"), f"{column}_lo": float("nan"), f"{column}_hi": float("nan"),
                            f"{column}_df": float("nan")})
                continue
            est, lo, hi, df = effects(values[column], word)
            row.update({column: est, f"{column}_lo": lo, f"{column}_hi": hi, f"{column}_df": df})
        rows.append(row)
    table = pd.DataFrame(rows)
    md = table[["effect"]].copy()
    if table.aliases.str.len().any():
        md["aliased with"] = [a or NA for a in table.aliases]
    for column, header, kind in RESPONSES:
        md[header] = [fmt_cell(r, column, kind) for _, r in table.iterrows()]
    counts = [int((done & (sign == c)).sum()) for c in d["cells"]]
    fraction = len(d["cells"]) < 2 ** len(keys)
    resolution = min((len(w) for w in d["words"]), default=None)
    if fraction:
        p = int(math.log2(len(d["words"]) + 1))
        shape = (f"a regular 2^({len(keys)}-{p}) fraction, defining relation I = "
                 f"{' = '.join(_word(names, w) for w in d['words'])}, resolution {_roman(resolution)}")
    else:
        shape = f"the full 2^{len(keys)} factorial"
    notes.append(f"Design: {shape}; factors {', '.join(f'{k} ({fmt_value(levels[k][0])} / {fmt_value(levels[k][1])})' for k in keys)}; "
                 f"{len(d['cells'])} cells, completed points per cell "
                 f"{min(counts)}{f'-{max(counts)}' if max(counts) != min(counts) else ''}, N = {sum(counts)}.")
    notes.append("Effect of a key = mean response over the cells at its second value minus over the cells at its "
                 "first (values in declared order); two-way interaction A x B = half of (A's effect at B's second "
                 "value - A's effect at B's first). 95% t interval from the pooled within-cell variance of the "
                 "completed points: " + _df_text(table) + ".")
    notes.append("Responses per run (analysis/release.py): plateau share of stage 1 = steps of the last stretch of "
                 "few-token evaluations that reaches the switch / stage-1 steps (0 without one); stage-1 loss rise = "
                 "eval loss at the last evaluation at or before the switch - the lowest eval loss of stage 1; "
                 "release = that loss - the loss at the evaluation nearest switch + the release window (positive: "
                 "it fell); final eval loss and unique tokens at the last evaluation.")
    for column, header, _ in RESPONSES:
        if empty[column]:
            notes.append(f"{header}: undecided, because no completed point has a value in "
                         + "; ".join(_cell_text(keys, levels, c) for c in empty[column]) + (" (e.g. runs that end before switch + window)"
                                                                       if column == "signature_release_drop" else "") + ".")
    return md, table, notes


def _df_text(table: pd.DataFrame) -> str:
    dfs = sorted({int(v) for c, _, _ in RESPONSES for v in table.get(f"{c}_df", pd.Series(dtype=float)).dropna()})
    if not dfs:
        return "no response has a value in every cell"
    text = f"df = N - cells = {'/'.join(map(str, dfs))}"
    return text + (" (df 0: one point per cell, no interval)" if 0 in dfs else "")


def _roman(n) -> str:
    return {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}.get(n, str(n))
