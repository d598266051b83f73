"""The issue's three plots: unique tokens vs step (log scale, switch lines), loss vs step, collapse ratio vs
hidden size; and issue 6's collapse diagnostics vs step (hidden cosine, loss gap, flip rate) when the sweep has
them. Each function draws on an Axes it is given (a notebook's) or on a new Figure it returns; figures
are built without pyplot so that the command works headless."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.load import Sweep
from analysis.tables import (COSINE_HIGH, RATIO_CLASSES, UNIGRAM_GAP, build_tables, cell_keys, fmt_value,
                             point_curves, step_label, switch_events)

# The diagnostics plot's panels, top to bottom: (metrics.csv column, y label).
DIAGNOSTIC_PANELS = [("hidden_cosine", "hidden cosine\n(final layer, across positions)"),
                     ("loss_gap", "loss gap (nats)\neval loss - unigram entropy"),
                     ("flip_rate", "flip rate\n(ternary codes since last eval)")]


def _axes(ax, size=(8, 4.5)):
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
    for step, labels in sorted(events.items()):
        ax.axvline(step, color="0.4", linestyle="--", linewidth=1)
        if annotate:
            ax.annotate(f"{' / '.join(sorted(labels))} @{step_label(step)}", (step, 1),
                        xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points", va="top", fontsize=8, color="0.3")


def plot_tokens(sweep: Sweep, ax=None, keys: list[str] | None = None):
    """Unique predicted tokens vs step, log scale, one line per point, dashed lines at the switches."""
    keys = cell_keys(sweep) if keys is None else keys
    fig, ax = _axes(ax)
    for point, curve, color, legend in _curves(sweep, keys):
        curve = curve.dropna(subset=["unique_tokens"])
        if len(curve):
            ax.plot(curve.step, curve.unique_tokens, marker="o", markersize=3, color=color, label=legend, alpha=0.85)
    _switch_lines(ax, sweep)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 10, 100 rather than 2x10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set(xlabel="step", ylabel="unique predicted tokens (eval)", title="Prediction diversity")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_loss(sweep: Sweep, ax=None, keys: list[str] | None = None):
    """Training loss (solid) and held-out loss (dashed) vs step, one colour per cell."""
    keys = cell_keys(sweep) if keys is None else keys
    fig, ax = _axes(ax)
    for point, curve, color, legend in _curves(sweep, keys):
        train, held = curve.dropna(subset=["loss"]), curve.dropna(subset=["eval_loss"])
        if len(train):
            ax.plot(train.step, train.loss, marker="o", markersize=3, color=color, label=legend)
        if len(held):
            ax.plot(held.step, held.eval_loss, linestyle="--", color=color, alpha=0.7,
                    label=f"{legend} (eval)" if legend and not len(train) else None)
    _switch_lines(ax, sweep)
    ax.set(xlabel="step", ylabel="loss (solid: train, dashed: eval)", title="Loss")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_collapse(sweep: Sweep, ax=None, early: int | None = None, late: int | None = None,
                  per_point: pd.DataFrame | None = None, keys: list[str] | None = None):
    """Collapse ratio tokens(late)/tokens(early) vs hidden size (log2 axis): one dot per point, the mean over
    seeds joined per group of the other swept keys, the seed-002 class bounds as dotted lines."""
    if per_point is None or early is None or late is None:
        _, params = build_tables(sweep, collapse_steps=(early, late) if early and late else None)
        per_point, early, late, keys = params["per_point"], params["early"], params["late"], params["keys"]
    keys = cell_keys(sweep) if keys is None else keys
    fig, ax = _axes(ax)
    pp = per_point.dropna(subset=["ratio"])
    if "hidden" not in pp or pp.empty:
        ax.text(0.5, 0.5, "no collapse ratio to plot (no hidden column or no tokens at both steps)",
                ha="center", va="center", transform=ax.transAxes)
    else:
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
            ax.annotate(f"{name} below {bound}", (0, bound), xycoords=("axes fraction", "data"), xytext=(3, 2),
                        textcoords="offset points", fontsize=7, color="0.4")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(pp.hidden.astype(float).unique()))
        ax.set_xticklabels([fmt_value(h) for h in sorted(pp.hidden.unique())])
        ax.legend(fontsize=8)
    ax.set(xlabel="hidden size", ylabel=f"tokens @{step_label(late)} / tokens @{step_label(early)}",
           title="Collapse ratio vs hidden size")
    ax.grid(True, alpha=0.3)
    return fig


def diagnostic_panels(sweep: Sweep) -> list[str]:
    """The diagnostics plot's columns that hold a value in this sweep (none for runs from before issue 6)."""
    frame = sweep.frame
    return [c for c, _ in DIAGNOSTIC_PANELS
            if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]


def plot_diagnostics(sweep: Sweep, axes=None, keys: list[str] | None = None):
    """Hidden cosine, loss gap and flip rate vs step, one panel each sharing the step axis, one line per point
    (a colour per cell, as in tokens.png), dashed lines at the switches; the verdict thresholds dotted (cosine
    0.9, loss gap +-0.1 shaded). Panels whose column is empty everywhere are left out; with none, returns None.
    `axes`: one Axes per panel of `diagnostic_panels(sweep)` (a notebook's), else a new Figure is returned."""
    panels = diagnostic_panels(sweep)
    if not panels:
        return None
    keys = cell_keys(sweep) if keys is None else keys
    if axes is None:
        fig = Figure(figsize=(8, 2.4 * len(panels) + 0.6), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    axes = list(axes)
    fig = axes[0].figure
    labels = dict(DIAGNOSTIC_PANELS)
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
    axes[0].set_title("Collapse diagnostics")
    axes[len(panels) - 1].set_xlabel("step")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    return fig


def save_plots(sweep: Sweep, out: Path, early: int, late: int, keys: list[str], per_point: pd.DataFrame) -> list[Path]:
    paths = []
    for name, fig in (("tokens.png", plot_tokens(sweep, keys=keys)), ("loss.png", plot_loss(sweep, keys=keys)),
                      ("collapse_ratio.png", plot_collapse(sweep, early=early, late=late, per_point=per_point,
                                                           keys=keys))):
        fig.savefig(Path(out) / name, dpi=110)
        paths.append(Path(out) / name)
    fig = plot_diagnostics(sweep, keys=keys)
    if fig is not None:  # no diagnostic column (runs from before issue 6): no diagnostics.png
        fig.savefig(Path(out) / "diagnostics.png", dpi=110)
        paths.append(Path(out) / "diagnostics.png")
    return paths
