"""The comparison's figures: per-run curves and test accuracy, the forest plot of the effects and
the mean curves with their spread. Each is drawn on its own Figure (no pyplot state), saved as PNG."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments import study, study_report
from experiments.study_report import in_points

VERDICT_COLOURS = {
    study.Verdict.HELPS: "tab:green",
    study.Verdict.HURTS: "tab:red",
    study.Verdict.EQUIVALENT: "tab:blue",
}


def plot_curves(histories: dict[str, list], title: str, key: str, path: Path) -> Path:
    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, points in histories.items():
        points = sorted(points, key=lambda point: point.step)
        axes.plot([p.step for p in points], [p.value for p in points], marker="o", markersize=2, label=label)
    axes.set(title=title, xlabel="epoch", ylabel=key)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if key == "learning_rate" and all(p.value > 0 for points in histories.values() for p in points):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if histories:
        axes.legend(fontsize=7, ncol=2)
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.92)
    figure.savefig(path, dpi=80)
    return path


def plot_test_accuracy(drawn: pd.DataFrame, labels: dict[str, str], path: Path) -> Path:
    """One bar per run, its value written on it, the axis zoomed to the values: bars from 0 would
    make 0.970 and 0.978 look the same."""
    figure = Figure(figsize=(8, 1.2 + 0.35 * max(len(drawn), 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    values = drawn["test_accuracy"]
    colours = ["tab:orange" if plain else "tab:blue" for plain in drawn["plain"]]
    names = [labels[run_id] for run_id in drawn["run_id"]]
    bars = axes.barh(names, values.fillna(0), color=colours)
    axes.bar_label(bars, labels=[f"{value:.3f}" if pd.notna(value) else "-" for value in values], padding=3, fontsize=8)
    known = values.dropna()
    if len(known):
        low, high = float(known.min()), float(known.max())
        margin = max(high - low, 0.005) * 0.6
        axes.set_xlim(max(0.0, low - margin), min(1.0, high + margin) + margin)  # room for the labels
    axes.invert_yaxis()  # the table's order, top to bottom
    axes.set(title="test accuracy (orange: plain)", xlabel="test_accuracy (axis zoomed to the values)")
    axes.tick_params(axis="y", labelsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.subplots_adjust(
        left=0.35, right=0.98, bottom=0.8 / figure.get_figheight(), top=1 - 0.4 / figure.get_figheight()
    )
    figure.savefig(path, dpi=80)
    return path


def plot_effects(verdicts: pd.DataFrame, metric: str, repeats: str, path) -> object:
    """The forest plot: a row per regularised configuration, its mean difference from plain and the
    interval the verdict was judged on (Holm-adjusted), zero marked, coloured by verdict."""
    effects = verdicts[~verdicts["plain"]].reset_index(drop=True)
    scale = 100 if in_points(metric) else 1
    figure = Figure(figsize=(9, 1.4 + 0.45 * max(len(effects), 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for position, row in effects.iterrows():
        mean, low, high = (row[f"d_{metric}{end}"] * scale for end in ("", "_low", "_high"))
        colour = VERDICT_COLOURS.get(row["verdict"], "0.45")
        if math.isfinite(low):
            axes.plot([low, high], [position, position], color=colour, linewidth=2)
        axes.plot([mean], [position], "o", color=colour)
        axes.annotate(
            f"{study_report.verdict_words(row)}, W/T/L {study_report.record_text(row)} {repeats}",
            (1.01, position),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
        )
    axes.axvline(0, color="0.3", linewidth=1, linestyle="--")
    margin = verdicts.attrs.get("margin", 0.0) * scale
    if margin > 0:  # equivalent: the interval inside this band
        axes.axvspan(-margin, margin, color="tab:blue", alpha=0.08, linewidth=0)
    names = ["\n".join(textwrap.wrap(name, 28, break_long_words=False)) for name in effects["configuration"]]
    axes.set_yticks(range(len(effects)), names, fontsize=8)
    axes.set_ylim(max(len(effects), 1) - 0.5, -0.5)
    unit = " (percentage points)" if in_points(metric) else ""
    axes.set(title=f"difference from plain in {metric}: mean and Holm-adjusted interval", xlabel=f"Δ {metric}{unit}")
    axes.grid(axis="x", alpha=0.3)
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.24, right=0.7, bottom=0.75 / height, top=1 - 0.45 / height)
    figure.savefig(path, dpi=80)
    return path


@dataclass(frozen=True)
class Curve:
    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def mean_curve(histories: list[list]) -> Curve:
    """Per epoch, the mean of the runs' values and their range (min to max) over the runs that
    reached that epoch."""
    frame = pd.DataFrame([{"epoch": p.step, "run": i, "value": p.value} for i, h in enumerate(histories) for p in h])
    if frame.empty:
        return Curve(*(np.array([]),) * 4)
    grouped = frame.groupby("epoch")["value"]
    return Curve(
        grouped.mean().index.to_numpy(), grouped.mean().to_numpy(), grouped.min().to_numpy(), grouped.max().to_numpy()
    )


@dataclass(frozen=True)
class Panel:
    """One regularised configuration's mean curves (by metric) and its plain partner's."""

    configuration: str
    curves: dict[str, Curve]
    plain: dict[str, Curve]


def plot_mean_curves(panels: list[Panel], repeats: str, path) -> object:
    """A panel per regularised configuration: each metric's mean over its repeats with a band from
    the lowest to the highest repeat, and the plain configuration's mean, dashed grey, beside it.
    One y scale for all panels, cut above at the highest mean after the first epoch."""
    columns = min(4, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / columns), 1)
    figure = Figure(figsize=(3.4 * columns + 0.6, 2.6 * rows + 0.9))
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for axes, panel in zip(grid.flat, panels):
        for colour, dashes, (key, curve) in zip(("tab:blue", "tab:orange"), ("--", ":"), panel.curves.items()):
            axes.plot(curve.epochs, curve.mean, color=colour, marker="o", markersize=2, label=key)
            axes.fill_between(curve.epochs, curve.low, curve.high, color=colour, alpha=0.2, linewidth=0)
            if key in panel.plain:
                plain = panel.plain[key]
                axes.plot(plain.epochs, plain.mean, color="0.4", linestyle=dashes, linewidth=1, label=f"{key}, plain")
        axes.set_title("\n".join(textwrap.wrap(panel.configuration, 34)), fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(panels) :]:
        axes.set_visible(False)
    # The first epochs' losses (about 2) would flatten what the study is about: the later ones.
    later = [value for p in panels for c in p.curves.values() for e, value in zip(c.epochs, c.mean) if e >= 2]
    if later:
        top = max(later)
        grid[0][0].set_ylim(min(0.0, *later) - 0.1 * top, 1.15 * top)
    if panels:
        handles, labels = grid[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="upper right", ncol=4, fontsize=8, frameon=False)
    figure.suptitle(f"mean over {repeats}, band min..max, by epoch", x=0.01, y=0.995, ha="left", fontsize=9)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=1 - 0.75 / figure.get_figheight(), hspace=0.45)
    figure.savefig(path, dpi=80)
    return path
