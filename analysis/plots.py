"""The plots: unique tokens vs step (log scale, switch lines), loss vs step (with the ln V and unigram-entropy
reference lines), collapse ratio vs size (sweeps over the size key: hidden unless --size-key), the collapse
diagnostics (hidden cosine, loss gap, flip rate) and the parameter groups' RMS vs step when the sweep has them,
and the phase map. Each function draws on an Axes it is given (a notebook's) or on a new Figure it returns;
figures are built without pyplot so that the command works headless. Legends sit below the axes, never over
the curves; switch labels stay inside the axes. Every function draws an Analysis (analysis/core.py): its
curves, cells and per-point measures, never measured again here.

A panel of more than MAX_LINES points would be a tangle of lines: it draws each cell's median over its seeds
with a band from their minimum to their maximum instead (cells grouped by the first key when there are more
than MAX_LINES cells too), and its title says so."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.core import Analysis
from analysis.fmt import fmt_value, step_label, untrusted
from analysis.measures import switch_events
from analysis import phase_map as phase_map_module
from analysis.phase_map import plot_phase_map
from analysis.rules import COSINE_HIGH, RATIO_CLASSES, UNIGRAM_GAP

# The diagnostics plot's panels, top to bottom: (metrics.csv column, y label).
DIAGNOSTIC_PANELS = [("hidden_cosine", "hidden cosine\n(final layer, across positions)"),
                     ("loss_gap", "loss gap (nats)\neval loss - unigram entropy"),
                     ("flip_rate", "flip rate\n(ternary codes since last eval)")]
# The mechanism plot's panels: the parameter groups that weight decay on every parameter shrinks, and the
# logit scale they set (bitnet.diagnostics.parameter_group_rms, bitnet.probe.evaluate).
PARAMETER_PANELS = [("final_norm_rms", "final norm gain\n(RMS)"), ("norm_gain_rms", "all norm gains\n(RMS)"),
                    ("embed_rms", "embedding\n(RMS)"), ("head_rms", "LM head\n(RMS)"),
                    ("latent_rms", "BitLinear latent\nweights (RMS)"), ("logit_std", "logit scale\n(std over vocab)")]


def _axes(ax, size=(10, 5)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _cell_label(row, keys) -> str:
    return ", ".join(f"{k}={fmt_value(row[k])}" for k in keys) or str(row["point"])


# More points than this in one panel are drawn as a median and a min-max band per cell (see the docstring).
MAX_LINES = 24


def _colors(labels: list[str]) -> dict:
    """One colour per label (a cell: its seeds share it), in the given order."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "viridis"]
    return {label: cmap(i if len(labels) <= 10 else i / max(1, len(labels) - 1)) for i, label in enumerate(labels)}


def _groups(a: Analysis) -> tuple[list[tuple[str, tuple]], str]:
    """([(group label, the point's curve key)] in the points' order, note): the group is the point's cell; `note`
    is "" when every point gets its own line, else what the summarised panel draws (for its title). Cells are
    merged by their first key's value when there are more than MAX_LINES of them."""
    points = a.points
    labels = [_cell_label(p, a.keys) for _, p in points.iterrows()]
    ids = list(zip(points.sweep, points.point))
    note = ""
    if len(ids) > MAX_LINES:
        note = "median over each cell's seeds, band: their min to max"
        if len(set(labels)) > MAX_LINES and a.keys:
            labels = [f"{a.keys[0]}={fmt_value(v)}" for v in points[a.keys[0]]]
            note = f"median over the points of each {a.keys[0]}, band: their min to max"
        if len(set(labels)) > MAX_LINES:
            labels, note = ["all points"] * len(ids), "median over all points, band: their min to max"
    return list(zip(labels, ids)), note


def _series(a: Analysis, columns: tuple[str, ...]):
    """(colour, group, legend label, {column: (step, value, low, high)}) per line: one per point in the points'
    order (low/high None; the legend label on a cell's first point only), or one per group of _groups (the median
    over its points, low/high their min and max) when the panel is summarised. Columns a point lacks are left out."""
    members, note = _groups(a)
    colors = _colors(list(dict.fromkeys(label for label, _ in members)))
    series = []
    for label, point in members:
        curve, values = a.curves[point], {}
        for column in columns:
            if column in curve:
                found = pd.to_numeric(curve[column], errors="coerce").dropna().sort_index()
                if len(found):
                    values[column] = found
        if values:
            series.append((label, values))
    if not note:
        seen = set()
        for label, values in series:
            yield colors[label], label, label if label not in seen else None, \
                {column: (v.index, v.values, None, None) for column, v in values.items()}
            seen.add(label)
        return
    groups = {}
    for label, values in series:
        for column, v in values.items():
            groups.setdefault(label, {}).setdefault(column, []).append(v)
    for label, by_column in groups.items():
        summary = {}
        for column, block in by_column.items():
            by_step = pd.concat(block).groupby(level=0)
            median = by_step.median()
            summary[column] = (median.index, median.values, by_step.min().values, by_step.max().values)
        yield colors[label], label, label, summary


def _draw(ax, line, color, label, marker: bool = True, **style) -> None:
    """One (step, value, low, high) of _series on `ax`: a point's line with markers, or a summary's median over
    a shaded band from low to high."""
    step, value, low, high = line
    if low is not None:
        ax.fill_between(step, low, high, color=color, alpha=0.18, linewidth=0)
        ax.plot(step, value, color=color, label=label, **style)
    else:
        ax.plot(step, value, color=color, label=label, **({"marker": "o", "markersize": 3} if marker else {}), **style)


def _title(text: str, a: Analysis) -> str:
    note = _groups(a)[1]
    return f"{text}\n({note}; {len(a.points)} points)" if note else text


def _legend(ax, columns: int = 3) -> None:
    """Below the axes (constrained layout makes room), so that no curve is hidden behind it. The labels quote
    run folders (keys, values, point names): escaped, so that a `$` in one is drawn, not parsed as mathtext."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # as many columns as fit the figure's width (about 16 characters an inch at this size, 6 for the marker),
        # so that long cell labels never squeeze the axes into a strip
        width = ax.figure.get_figwidth() * 16
        fits = max(1, int(width // (max(len(label) for label in labels) + 6)))
        ax.legend(handles, [untrusted(label, "plot") for label in labels], fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncols=min(columns, fits, len(handles)), frameon=False)


def _switch_lines(ax, a: Analysis, annotate: bool = True) -> None:
    events = {}
    for _, point in a.points.iterrows():
        for step, label in switch_events(point):
            events.setdefault(step, set()).add(label)
    if not events:
        return
    low, high = ax.get_xlim()
    for step, labels in sorted(events.items()):
        ax.axvline(step, color="0.4", linestyle="--", linewidth=1)
        if annotate:
            # Right of the line in the left half, left of it in the right half, so that it stays inside the
            # axes; kept out of the layout so a long label never squeezes the axes.
            right_half = step > low + 0.5 * (high - low)
            text = ax.annotate(f"{untrusted(' / '.join(sorted(labels)), 'plot')} @{step_label(step)}", (step, 1),
                               xycoords=("data", "axes fraction"), xytext=(-4 if right_half else 4, -4),
                               textcoords="offset points", va="top", ha="right" if right_half else "left",
                               fontsize=8, color="0.3", backgroundcolor=(1, 1, 1, 0.7))
            text.set_in_layout(False)


def plot_tokens(a: Analysis, ax=None):
    """Unique predicted tokens vs step, log scale, one line per point (a colour per cell), dashed lines at the
    switches, the collapse level dotted (at or below it a point counts as collapsed)."""
    collapse_level = a.rules.collapse_level
    fig, ax = _axes(ax)
    for color, _, label, lines in _series(a, ("unique_tokens",)):
        _draw(ax, lines["unique_tokens"], color, label, alpha=0.85)
    ax.axhline(collapse_level, color="0.35", linestyle=":", linewidth=1)
    ax.annotate(f"collapsed: ≤ {collapse_level:g} tokens", (1, collapse_level), xycoords=("axes fraction", "data"),
                xytext=(-4, -3), textcoords="offset points", ha="right", va="top", fontsize=8,
                color="0.3").set_in_layout(False)
    _switch_lines(ax, a)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    def label(value, _):
        """2, 10, 100 rather than 2x10^0; of the ticks between powers of ten only 2 and 5 (x 10^k) are labelled:
        all eight would overlap near the top of each decade (8, 9, 10)."""
        if value <= 0:
            return ""
        leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if leading in (1, 2, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))
    ax.set(xlabel="step", ylabel="unique predicted tokens (eval)", title=_title("Prediction diversity", a))
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return fig


def plot_loss(a: Analysis, ax=None):
    """Training loss (solid) and held-out loss (dashed) vs step, one colour per cell; a label-smoothed training
    loss (not plain cross-entropy) dotted and labelled; ln(V) and the unigram entropy as reference lines."""
    fig, ax = _axes(ax)
    members = _groups(a)[0]
    smoothed = {label: None for label, _ in members}  # group -> its label smoothing (None: plain cross-entropy)
    for (label, _), value in zip(members, a.points.get("train.label_smoothing", [None] * len(members))):
        if not pd.isna(value) and value != 0:
            smoothed[label] = value
    for color, group, label, lines in _series(a, ("loss", "eval_loss")):
        if "loss" in lines:
            shown = f"{label} (train loss with label smoothing {smoothed[group]:g})" \
                if label and smoothed[group] is not None else label
            _draw(ax, lines["loss"], color, shown, linestyle=":" if smoothed[group] is not None else "-")
        if "eval_loss" in lines:
            _draw(ax, lines["eval_loss"], color, f"{label} (eval)" if label and "loss" not in lines else None,
                  marker=False, linestyle="--", alpha=0.7)
    for column, name in (("ln_vocab", "ln V (uniform prediction)"), ("unigram_entropy", "unigram entropy")):
        values = pd.to_numeric(a.points[column], errors="coerce").dropna().unique()
        for value in values[:3]:
            ax.axhline(value, color="0.35", linestyle="-.", linewidth=0.9)
            ax.annotate(f"{name} {value:.2f}", (0, value), xycoords=("axes fraction", "data"), xytext=(3, 2),
                        textcoords="offset points", fontsize=7, color="0.3").set_in_layout(False)
    _switch_lines(ax, a)
    ax.set(xlabel="step", ylabel="loss, nats (solid: train, dashed: eval)", title=_title("Loss", a))
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return fig


def plot_collapse(a: Analysis, ax=None):
    """Collapse ratio tokens(late)/tokens(early) vs size (the size key, hidden by default; log2 axis): one dot
    per point, the mean over seeds joined per group of the other swept keys, the class bounds as dotted lines.
    None when the sweep does not vary the size or no point has tokens at both steps (no empty frame)."""
    size, keys, early, late = a.size_key, a.keys, a.early, a.late
    pp = a.per_point.dropna(subset=["ratio"])
    if size not in keys or pp.empty:
        return None
    fig, ax = _axes(ax)
    others = [k for k in keys if k != size]
    from matplotlib import colormaps

    groups = list(pp.groupby(others, dropna=False, sort=False)) if others else [((), pp)]
    for i, (group, block) in enumerate(groups):
        group = group if isinstance(group, tuple) else (group,)
        color = colormaps["tab10"](i % 10)
        label = ", ".join(f"{k}={fmt_value(v)}" for k, v in zip(others, group)) or "mean over seeds"
        ax.scatter(block[size].astype(float), block.ratio, color=color, s=14, alpha=0.5)
        mean = block.groupby(size).ratio.mean().sort_index()
        ax.plot(mean.index.astype(float), mean.values, marker="o", color=color, label=label)
    for bound, name in RATIO_CLASSES[:-1]:
        ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"{name} up to {bound:g}", (0, bound), xycoords=("axes fraction", "data"), xytext=(3, -9),
                    textcoords="offset points", fontsize=7, color="0.4").set_in_layout(False)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(pp[size].astype(float).unique()))
    ax.set_xticklabels([fmt_value(h) for h in sorted(pp[size].unique())])
    ax.set(xlabel=f"{size} size" if size == "hidden" else size,
           ylabel=f"tokens @{step_label(late)} / tokens @{step_label(early)}",
           title=f"Collapse ratio vs {size} size" if size == "hidden" else f"Collapse ratio vs {size}")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return fig


def diagnostic_panels(a: Analysis, candidates=DIAGNOSTIC_PANELS) -> list[str]:
    """The columns of `candidates` that hold a value in this sweep (none for runs made before they existed)."""
    frame = a.sweep.frame
    return [c for c, _ in candidates
            if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def plot_diagnostics(a: Analysis, axes=None):
    """Hidden cosine, loss gap and flip rate vs step, one panel each sharing the step axis, one line per point
    (a colour per cell, as in tokens.png), dashed lines at the switches; the verdict thresholds dotted (cosine
    0.9, loss gap +-0.1 shaded). Panels whose column is empty everywhere are left out; with none, returns None.
    `axes`: one Axes per panel of `diagnostic_panels(a)` (a notebook's), else a new Figure is returned."""
    return _plot_panels(a, DIAGNOSTIC_PANELS, "Collapse diagnostics", axes)


def plot_mechanism(a: Analysis, axes=None):
    """What weight decay does to each parameter group: the final norm's gain, all norm gains, embedding, LM head
    and BitLinear latent weights (RMS each) and the logit scale vs step, panels as in plot_diagnostics. A
    coupled-L2 stall shows here as gains and logit scale pulled down until the WD switch releases them."""
    return _plot_panels(a, PARAMETER_PANELS, "Parameter groups and logit scale", axes)


def _plot_panels(a: Analysis, candidates, title: str, axes):
    panels = diagnostic_panels(a, candidates)
    if not panels:
        return None
    if axes is None:
        fig = Figure(figsize=(10, 2.4 * len(panels) + 1.2), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    axes = list(axes)
    fig = axes[0].figure
    labels = dict(candidates)
    for ax, column in zip(axes, panels):
        for color, _, label, lines in _series(a, (column,)):
            _draw(ax, lines[column], color, label, alpha=0.85)
        if column == "hidden_cosine":
            ax.axhline(COSINE_HIGH, color="0.5", linestyle=":", linewidth=1)
        if column == "loss_gap":
            ax.axhline(0, color="0.5", linestyle=":", linewidth=1)
            ax.axhspan(-UNIGRAM_GAP, UNIGRAM_GAP, color="0.85", alpha=0.5, linewidth=0)
        _switch_lines(ax, a, annotate=ax is axes[0])  # labelled once, on the top panel
        ax.set_ylabel(labels[column], fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(_title(title, a))
    axes[len(panels) - 1].set_xlabel("step")
    _legend(axes[len(panels) - 1])
    return fig


def figures(a: Analysis) -> list[tuple[str, Figure]]:
    """[(file name, Figure)]: tokens.png, loss.png, collapse_ratio.png (sweeps over the size key),
    diagnostics.png and mechanism.png (runs with those columns) and phase_map.png (numeric keys varied one at a
    time)."""
    drawn = [("tokens.png", plot_tokens(a)), ("loss.png", plot_loss(a)), ("collapse_ratio.png", plot_collapse(a)),
             ("diagnostics.png", plot_diagnostics(a)), ("mechanism.png", plot_mechanism(a)),
             ("phase_map.png", plot_phase_map(a.per_point, a.keys))]
    return [(name, fig) for name, fig in drawn if fig is not None]


def save_figure(fig: Figure, path: Path) -> Path:
    """A PNG that depends only on the data and the matplotlib install: no version stamp in its metadata, so that
    a committed plot is rewritten byte for byte when nothing changed."""
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return Path(path)


# Beside the PNGs save_plots writes: what they were drawn from, so that the report can reuse them (drawn_plots).
PLOTS_RECORD = "plots.json"
FIGURE_NAMES = ("tokens.png", "loss.png", "collapse_ratio.png", "diagnostics.png", "mechanism.png", "phase_map.png")


def fingerprint(a: Analysis) -> str:
    """A digest of everything the figures are drawn from: the metric rows, the points, the cells' keys, the
    collapse steps and rules, the size key, the drawing code (this file and the phase map's) and the matplotlib
    version. Equal digests, equal PNGs."""
    import matplotlib

    digest = hashlib.sha256()
    for frame in (a.sweep.frame, a.points):
        for column in frame.columns:  # numbers hashed as they are, anything else as its text
            values = frame[column]
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            digest.update(repr(column).encode())
            digest.update(pd.util.hash_pandas_object(values if numeric else values.astype(str), index=False)
                          .to_numpy().tobytes())
    digest.update(repr((a.keys, a.early, a.late, a.rules, a.size_key, MAX_LINES, matplotlib.__version__)).encode())
    for code in (__file__, phase_map_module.__file__):
        digest.update(Path(code).read_bytes())
    return digest.hexdigest()


def save_plots(a: Analysis, out: Path) -> list[Path]:
    """The figures() into `out`, and PLOTS_RECORD saying what they were drawn from."""
    saved = [save_figure(fig, Path(out) / name) for name, fig in figures(a)]
    (Path(out) / PLOTS_RECORD).write_text(json.dumps({"fingerprint": fingerprint(a),
                                                       "files": [p.name for p in saved]}, indent=1) + "\n")
    return saved + [Path(out) / PLOTS_RECORD]


def drawn_plots(a: Analysis, folder: Path) -> list[Path] | None:
    """The PNGs save_plots wrote into `folder` for this very Analysis (same fingerprint), or None when there are
    none or they were drawn from other data or options: the report copies them instead of drawing again. The
    record sits in a results folder, so it is untrusted: only figure names this module draws, plain files in
    `folder` (no link that could copy some other file into the report)."""
    try:
        record = json.loads((Path(folder) / PLOTS_RECORD).read_text())
        names = [str(name) for name in record["files"]]
        recorded = record["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = [Path(folder) / name for name in names]
    if not names or not all(name in FIGURE_NAMES for name in names) \
            or not all(p.is_file() and not p.is_symlink() for p in files) or recorded != fingerprint(a):
        return None
    return files
