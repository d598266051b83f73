"""The plots: unique tokens vs step (log scale, switch lines), loss vs step (with the ln V and unigram-entropy
reference lines), collapse ratio vs hidden size (sweeps over hidden only), and the collapse diagnostics vs step
(hidden cosine, loss gap, flip rate) when the sweep has them. Each function draws on an Axes it is given (a
notebook's) or on a new Figure it returns; figures are built without pyplot so that the command works headless.
Legends sit below the axes, never over the curves; switch labels stay inside the axes."""

from __future__ import annotations

import math

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.fmt import fmt_value, step_label, untrusted
from analysis.load import Sweep
from analysis.measures import (cell_keys, default_collapse_steps, per_point, point_curves, switch_events)
from analysis.phase_map import plot_phase_map
from analysis.rules import COLLAPSE_LEVEL, COSINE_HIGH, RATIO_CLASSES, UNIGRAM_GAP

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


def _colors(sweep: Sweep, keys: list[str]) -> dict:
    """One colour per cell (seeds of a cell share it), in the points' order."""
    from matplotlib import colormaps

    labels = list(dict.fromkeys(_cell_label(p, keys) for _, p in sweep.points.iterrows()))
    cmap = colormaps["tab10" if len(labels) <= 10 else "viridis"]
    return {label: cmap(i if len(labels) <= 10 else i / max(1, len(labels) - 1)) for i, label in enumerate(labels)}


def _keys(sweep: Sweep, keys):
    return cell_keys(sweep)[0] if keys is None else keys


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


def _curves(sweep: Sweep, keys: list[str]):
    colors, seen, curves = _colors(sweep, keys), set(), point_curves(sweep)
    for _, point in sweep.points.iterrows():
        curve = curves[(point.sweep, point.point)].sort_index().reset_index()
        label = _cell_label(point, keys)
        legend = label if label not in seen else None  # one legend entry per cell, not per seed
        seen.add(label)
        yield point, curve, colors[label], legend


def _switch_lines(ax, sweep: Sweep, annotate: bool = True) -> None:
    events = {}
    for _, point in sweep.points.iterrows():
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


def plot_tokens(sweep: Sweep, ax=None, keys: list[str] | None = None, collapse_level: float = COLLAPSE_LEVEL):
    """Unique predicted tokens vs step, log scale, one line per point, dashed lines at the switches, the collapse
    level dotted (at or below it a point counts as collapsed)."""
    keys = _keys(sweep, keys)
    fig, ax = _axes(ax)
    for point, curve, color, legend in _curves(sweep, keys):
        curve = curve.dropna(subset=["unique_tokens"])
        if len(curve):
            ax.plot(curve.step, curve.unique_tokens, marker="o", markersize=3, color=color, label=legend, alpha=0.85)
    ax.axhline(collapse_level, color="0.35", linestyle=":", linewidth=1)
    ax.annotate(f"collapsed: ≤ {collapse_level:g} tokens", (1, collapse_level), xycoords=("axes fraction", "data"),
                xytext=(-4, -3), textcoords="offset points", ha="right", va="top", fontsize=8,
                color="0.3").set_in_layout(False)
    _switch_lines(ax, sweep)
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
    ax.set(xlabel="step", ylabel="unique predicted tokens (eval)", title="Prediction diversity")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return fig


def plot_loss(sweep: Sweep, ax=None, keys: list[str] | None = None):
    """Training loss (solid) and held-out loss (dashed) vs step, one colour per cell; a label-smoothed training
    loss (not plain cross-entropy) dotted and labelled; ln(V) and the unigram entropy as reference lines."""
    keys = _keys(sweep, keys)
    fig, ax = _axes(ax)
    for point, curve, color, legend in _curves(sweep, keys):
        train, held = curve.dropna(subset=["loss"]), curve.dropna(subset=["eval_loss"])
        smoothing = point.get("train.label_smoothing")
        smoothed = not pd.isna(smoothing) and smoothing not in (None, 0)
        if len(train):
            label = f"{legend} (train loss with label smoothing {smoothing:g})" if legend and smoothed else legend
            ax.plot(train.step, train.loss, marker="o", markersize=3, color=color, label=label,
                    linestyle=":" if smoothed else "-")
        if len(held):
            ax.plot(held.step, held.eval_loss, linestyle="--", color=color, alpha=0.7,
                    label=f"{legend} (eval)" if legend and not len(train) else None)
    for column, name in (("ln_vocab", "ln V (uniform prediction)"), ("unigram_entropy", "unigram entropy")):
        values = pd.to_numeric(sweep.points[column], errors="coerce").dropna().unique()
        for value in values[:3]:
            ax.axhline(value, color="0.35", linestyle="-.", linewidth=0.9)
            ax.annotate(f"{name} {value:.2f}", (0, value), xycoords=("axes fraction", "data"), xytext=(3, 2),
                        textcoords="offset points", fontsize=7, color="0.3").set_in_layout(False)
    _switch_lines(ax, sweep)
    ax.set(xlabel="step", ylabel="loss, nats (solid: train, dashed: eval)", title="Loss")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return fig


def plot_collapse(sweep: Sweep, ax=None, early: int | None = None, late: int | None = None,
                  per_point_frame: pd.DataFrame | None = None, keys: list[str] | None = None):
    """Collapse ratio tokens(late)/tokens(early) vs hidden size (log2 axis): one dot per point, the mean over
    seeds joined per group of the other swept keys, the class bounds as dotted lines. None when the sweep does
    not vary hidden or no point has tokens at both steps (no empty frame)."""
    keys = _keys(sweep, keys)
    if per_point_frame is None or early is None or late is None:
        curves = point_curves(sweep)
        if early is None or late is None:
            early, late, _ = default_collapse_steps(sweep, curves)
        per_point_frame = per_point(sweep, curves, [], early, late, keys)
    pp = per_point_frame.dropna(subset=["ratio"])
    if "hidden" not in keys or pp.empty:
        return None
    fig, ax = _axes(ax)
    others = [k for k in keys if k != "hidden"]
    from matplotlib import colormaps

    groups = list(pp.groupby(others, dropna=False, sort=False)) if others else [((), pp)]
    for i, (group, block) in enumerate(groups):
        group = group if isinstance(group, tuple) else (group,)
        color = colormaps["tab10"](i % 10)
        label = ", ".join(f"{k}={fmt_value(v)}" for k, v in zip(others, group)) or "mean over seeds"
        ax.scatter(block.hidden.astype(float), block.ratio, color=color, s=14, alpha=0.5)
        mean = block.groupby("hidden").ratio.mean().sort_index()
        ax.plot(mean.index.astype(float), mean.values, marker="o", color=color, label=label)
    for bound, name in RATIO_CLASSES[:-1]:
        ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(f"{name} up to {bound:g}", (0, bound), xycoords=("axes fraction", "data"), xytext=(3, -9),
                    textcoords="offset points", fontsize=7, color="0.4").set_in_layout(False)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(pp.hidden.astype(float).unique()))
    ax.set_xticklabels([fmt_value(h) for h in sorted(pp.hidden.unique())])
    ax.set(xlabel="hidden size", ylabel=f"tokens @{step_label(late)} / tokens @{step_label(early)}",
           title="Collapse ratio vs hidden size")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return fig


def diagnostic_panels(sweep: Sweep, candidates=DIAGNOSTIC_PANELS) -> list[str]:
    """The columns of `candidates` that hold a value in this sweep (none for runs made before they existed)."""
    frame = sweep.frame
    return [c for c, _ in candidates
            if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def plot_diagnostics(sweep: Sweep, axes=None, keys: list[str] | None = None):
    """Hidden cosine, loss gap and flip rate vs step, one panel each sharing the step axis, one line per point
    (a colour per cell, as in tokens.png), dashed lines at the switches; the verdict thresholds dotted (cosine
    0.9, loss gap +-0.1 shaded). Panels whose column is empty everywhere are left out; with none, returns None.
    `axes`: one Axes per panel of `diagnostic_panels(sweep)` (a notebook's), else a new Figure is returned."""
    return _plot_panels(sweep, DIAGNOSTIC_PANELS, "Collapse diagnostics", axes, keys)


def plot_mechanism(sweep: Sweep, axes=None, keys: list[str] | None = None):
    """What weight decay does to each parameter group: the final norm's gain, all norm gains, embedding, LM head
    and BitLinear latent weights (RMS each) and the logit scale vs step, panels as in plot_diagnostics. A
    coupled-L2 stall shows here as gains and logit scale pulled down until the WD switch releases them."""
    return _plot_panels(sweep, PARAMETER_PANELS, "Parameter groups and logit scale", axes, keys)


def _plot_panels(sweep: Sweep, candidates, title: str, axes, keys):
    panels = diagnostic_panels(sweep, candidates)
    if not panels:
        return None
    keys = _keys(sweep, keys)
    if axes is None:
        fig = Figure(figsize=(10, 2.4 * len(panels) + 1.2), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    axes = list(axes)
    fig = axes[0].figure
    labels = dict(candidates)
    for ax, column in zip(axes, panels):
        for point, curve, color, legend in _curves(sweep, keys):
            values = pd.to_numeric(curve[column], errors="coerce") if column in curve else None
            if values is None or values.isna().all():
                continue
            ok = values.notna()
            ax.plot(curve.step[ok], values[ok], marker="o", markersize=3, color=color, label=legend, alpha=0.85)
        if column == "hidden_cosine":
            ax.axhline(COSINE_HIGH, color="0.5", linestyle=":", linewidth=1)
        if column == "loss_gap":
            ax.axhline(0, color="0.5", linestyle=":", linewidth=1)
            ax.axhspan(-UNIGRAM_GAP, UNIGRAM_GAP, color="0.85", alpha=0.5, linewidth=0)
        _switch_lines(ax, sweep, annotate=ax is axes[0])  # labelled once, on the top panel
        ax.set_ylabel(labels[column], fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(title)
    axes[len(panels) - 1].set_xlabel("step")
    _legend(axes[len(panels) - 1])
    return fig


def figures(sweep: Sweep, params: dict) -> list[tuple[str, Figure]]:
    """[(file name, Figure)]: tokens.png, loss.png, collapse_ratio.png (sweeps over hidden), diagnostics.png and
    mechanism.png (runs with those columns) and phase_map.png (numeric keys varied one at a time); `params` is
    build_tables' second value."""
    keys = params["keys"]
    drawn = [("tokens.png", plot_tokens(sweep, keys=keys, collapse_level=params["rules"].collapse_level)),
             ("loss.png", plot_loss(sweep, keys=keys)),
             ("collapse_ratio.png", plot_collapse(sweep, early=params["early"], late=params["late"],
                                                  per_point_frame=params["per_point"], keys=keys)),
             ("diagnostics.png", plot_diagnostics(sweep, keys=keys)),
             ("mechanism.png", plot_mechanism(sweep, keys=keys)),
             ("phase_map.png", plot_phase_map(params["per_point"], keys))]
    return [(name, fig) for name, fig in drawn if fig is not None]


def save_figure(fig: Figure, path: Path) -> Path:
    """A PNG that depends only on the data and the matplotlib install: no version stamp in its metadata, so that
    a committed plot is rewritten byte for byte when nothing changed."""
    fig.savefig(path, dpi=110, metadata={"Software": None})
    return Path(path)


def save_plots(sweep: Sweep, out: Path, params: dict) -> list[Path]:
    """The figures() into `out`."""
    return [save_figure(fig, Path(out) / name) for name, fig in figures(sweep, params)]
