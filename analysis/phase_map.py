"""The phase map: for sweeps that vary numeric keys one at a time around a centre (run length via train.steps,
data.vocab_size, hidden, the stage-1 weight decay wd.value...), where the few-token plateau sits on each axis.

Per axis value (the centre belongs to every axis): the plateau's learning phase (bitnet.phases: near-uniform,
unigram, contextual; `none` without a plateau), how long it lasts (steps, and share of stage 1), how much the
loss rose on it, the release over the window after the switch (nats, tokens before -> after) and the signature
verdict with k/n seeds; one figure, phase_map.png, with a panel per axis: x = the axis value, y = plateau share
of stage 1, colour and marker = plateau phase, each cell annotated with its release. The numbers are
analysis.release's, per completed point; several sweep folders load as one (python -m analysis.tables a b c),
so each axis may come from its own sweep as long as they share the centre.
"""

from __future__ import annotations

import math
from numbers import Number

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.fmt import NA, fmt_value
from analysis.release import NO_PLATEAU
from analysis.rules import counted, phases_summary
from analysis.stats import mean_ci
from bitnet.phases import CONTEXTUAL, NEAR_UNIFORM, UNIGRAM, UNKNOWN
from bitnet.records import FINISHED_STATUSES

# Colour and marker per plateau phase: the nearer uniform, the warmer.
STYLE = {NEAR_UNIFORM: ("tab:red", "o"), UNIGRAM: ("tab:orange", "s"), CONTEXTUAL: ("tab:green", "^"),
         NO_PLATEAU: ("0.55", "x"), UNKNOWN: ("black", "d")}


class NotAStar(ValueError):
    """Why the sweep has no phase map (one line)."""


def _numeric(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and not math.isnan(value)


def star(pp: pd.DataFrame, keys: list[str]) -> tuple[dict | None, dict]:
    """(centre, {key: [values in increasing order]}) of a one-key-at-a-time design over numeric keys; the centre
    is None for a single key. Raises NotAStar with the reason."""
    if not keys:
        raise NotAStar("needs a sweep over one or more numeric config keys (besides seed)")
    text = [k for k in keys if not all(_numeric(v) for v in pp[k])]
    if text:
        raise NotAStar(f"needs numeric axes: {', '.join(text)} takes values that are not numbers")
    cells = list(dict.fromkeys(tuple(r) for r in pp[keys].itertuples(index=False)))
    if len(keys) == 1:
        return None, {keys[0]: sorted({c[0] for c in cells})}
    differ = lambda a, b: sum(x != y for x, y in zip(a, b))  # noqa: E731
    centres = [c for c in cells if all(differ(c, o) <= 1 for o in cells)]
    if not centres:
        raise NotAStar(f"no cell from which every other cell differs in exactly one of {', '.join(keys)}: not a "
                       f"one-axis-at-a-time design around a centre")
    centre = centres[0]
    axes = {k: sorted({c[i] for c in cells if differ(c, centre) <= 1}) for i, k in enumerate(keys)}
    return dict(zip(keys, centre)), axes


def _cell(pp: pd.DataFrame, keys: list[str], centre: dict | None, key: str, value) -> pd.DataFrame:
    match = pp[key] == value
    for other in keys:
        if other != key and centre is not None:
            match &= pp[other] == centre[other]
    return pp[match]


def phase_map_rows(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict | None]:
    """One row per (axis, value) with the numbers of the table and the plot; the centre."""
    centre, axes = star(pp, keys)
    rows = []
    for key, values in axes.items():
        for value in values:
            block = _cell(pp, keys, centre, key, value)
            done = block[block.status.isin(FINISHED_STATUSES)]
            row = {"axis": key, "value": value, "centre": centre is not None and value == centre[key],
                   "points": len(block), "finished": len(done),
                   "waiting": ", ".join(f"{s}" for s in block.status if s not in FINISHED_STATUSES),
                   "stage1_steps": done.first_switch.dropna().mean() if len(done) else float("nan"),
                   "plateau_phase": phases_summary(list(done.signature_plateau_phase)),
                   "phases": list(done.signature_plateau_phase),
                   "shares": list(done.signature_plateau_fraction),
                   "plateau": counted(list(done.signature_plateau)), "signature": counted(list(done.signature)),
                   "release_why": "; ".join(dict.fromkeys(w for w in done.signature_release_why if w))}
            for column, name in (("signature_plateau_steps", "plateau_steps"),
                                 ("signature_plateau_fraction", "plateau_share"),
                                 ("signature_plateau_rise", "plateau_rise"), ("signature_release_drop", "release"),
                                 ("signature_tokens_before", "tokens_before"), ("signature_tokens_after", "tokens_after")):
                mean, lo, hi, n = mean_ci(done[column])
                row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi, f"{name}_n": n})
            rows.append(row)
    return pd.DataFrame(rows), centre


def _with_ci(row, name: str, kind: str) -> str:
    text = fmt_value(row[name], kind)
    if text != NA and not pd.isna(row[f"{name}_lo"]):
        text += f" [{fmt_value(row[f'{name}_lo'], kind)}, {fmt_value(row[f'{name}_hi'], kind)}]"
    return text


def phase_map_table(pp: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(markdown, csv, notes). Raises NotAStar."""
    table, centre = phase_map_rows(pp, keys)
    md = pd.DataFrame({
        "axis": table.axis,
        "value": [fmt_value(v) + (" (centre)" if c else "") for v, c in zip(table.value, table.centre)],
        "stage 1 (steps)": [fmt_value(v, "step") for v in table.stage1_steps],
        "plateau phase": table.plateau_phase,
        "plateau (steps)": [_with_ci(r, "plateau_steps", "step") for _, r in table.iterrows()],
        "share of stage 1": [_with_ci(r, "plateau_share", "ratio") for _, r in table.iterrows()],
        "loss rise on it (nats)": [_with_ci(r, "plateau_rise", "ratio") for _, r in table.iterrows()],
        "release (nats)": [_with_ci(r, "release", "ratio") if r.release_n else
                           f"undecided, because {r.release_why}" if r.release_why else NA for _, r in table.iterrows()],
        "tokens before → after": [f"{fmt_value(r.tokens_before, 'tokens')} → {fmt_value(r.tokens_after, 'tokens')}"
                                  if r.tokens_after_n else NA for _, r in table.iterrows()],
        "lasting plateau": table.plateau,
        "signature": table.signature,
        "seeds": [f"{r.finished}/{r.points}" + (f" (waiting: {r.waiting})" if r.waiting else "")
                  for _, r in table.iterrows()],
    })
    centre_text = ", ".join(f"{k}={fmt_value(v)}" for k, v in centre.items()) if centre else "none (a single axis)"
    notes = [f"Centre: {centre_text}; each axis varies one key with the others at the centre. Means over the "
             f"finished seeds with 95% t intervals; seeds = finished/all points of the cell.",
             "Plateau = the last stretch of few-token evaluations (at most --signature-tokens unique tokens) that "
             "reaches the switch; its phase is the learning phase most of its evaluations are in (`none`: no such "
             "stretch); share of stage 1 = its steps / the steps before the switch; loss rise = its last eval loss "
             "- its lowest; release = eval loss at the last evaluation at or before the switch - at the evaluation "
             "nearest switch + the release window (positive: it fell), tokens likewise."]
    csv = table.drop(columns=["phases", "shares"])
    return md, csv, notes


def plot_phase_map(pp: pd.DataFrame, keys: list[str]) -> Figure | None:
    """phase_map.png: one panel per axis, x = its value, y = plateau share of stage 1 (the seeds small, their
    mean large), colour/marker = plateau phase, each value annotated with its mean release in nats. None when
    the sweep is not a one-axis-at-a-time design."""
    try:
        table, centre = phase_map_rows(pp, keys)
    except NotAStar:
        return None
    axes_keys = list(dict.fromkeys(table.axis))
    fig = Figure(figsize=(max(9.0, 4.2 * len(axes_keys) + 0.6), 4.4), layout="constrained")  # title, legend fit
    panels = fig.subplots(1, len(axes_keys), squeeze=False)[0]
    for ax, key in zip(panels, axes_keys):
        block = table[table.axis == key]
        values = list(block.value)
        if min(values) > 0 and max(values) / min(values) >= 4:
            ax.set_xscale("log")
        for _, row in block.iterrows():
            for phase, share in zip(row.phases, row.shares):  # each seed
                if not pd.isna(share):
                    color, marker = STYLE.get(phase, STYLE[UNKNOWN])
                    ax.scatter([row.value], [share], color=color, marker=marker, s=18, alpha=0.45, linewidths=1)
            if pd.isna(row.plateau_share):
                continue
            known = [p for p in row.phases if p]
            phase = max(dict.fromkeys(known), key=known.count) if known else UNKNOWN
            color, marker = STYLE.get(phase, STYLE[UNKNOWN])
            ax.scatter([row.value], [row.plateau_share], color=color, marker=marker, s=90, linewidths=2,
                       edgecolors="black" if marker != "x" else None, zorder=3)
            arrow = "↓" if row.release >= 0 else "↑"  # the eval loss fell (a release) or rose over the window
            release = (f"{arrow}{abs(row.release):.2f} nats" if row.release_n else "release ?") + \
                (f"\n{fmt_value(row.tokens_before, 'tokens')}→{fmt_value(row.tokens_after, 'tokens')} tok"
                 if row.tokens_after_n else "")
            ax.annotate(release, (row.value, row.plateau_share), textcoords="offset points", xytext=(0, 9),
                        ha="center", fontsize=7)
        if centre is not None:
            ax.axvline(centre[key], color="0.6", linestyle=":", linewidth=1)
        ax.set_xticks(values, [fmt_value(v) for v in values])
        ax.minorticks_off()
        ax.margins(x=0.15)
        ax.set_ylim(-0.05, 1.2)
        ax.set_xlabel(key + (" (centre dotted)" if centre is not None else ""))
        ax.grid(True, alpha=0.3)
    panels[0].set_ylabel("plateau share of stage 1")
    fig.suptitle("Phase map: the few-token plateau's phase and share of stage 1; annotated: the release (eval loss "
                 "change over the\nwindow after the switch, ↓ = fell) and unique tokens before → after", fontsize=9)
    handles = [Line2D([], [], color=c, marker=m, linestyle="", label=p if p != NO_PLATEAU else "no plateau")
               for p, (c, m) in STYLE.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig
