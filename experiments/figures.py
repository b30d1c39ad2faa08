"""The comparison's figures, each by configuration (every run counted): curves and test accuracy, the
forest plot of the effects and the mean curves beside plain's. Each is drawn on its own Figure (no
pyplot state), saved as a PNG at print resolution with an SVG beside it."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib
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


DPI = 150  # print resolution for the PNG; the SVG beside it scales to any size


def save(figure: Figure, path: Path) -> list[Path]:
    """``path`` (PNG) and an SVG beside it, each cropped to what is drawn, so no label is cut off."""
    figure.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: searchable, editable
        figure.savefig(path.with_suffix(".svg"), bbox_inches="tight", pad_inches=0.1)
    return [path, path.with_suffix(".svg")]


def wrapped(name: str, width: int = 28) -> str:
    """A label on lines of about ``width``, broken at spaces only: a name is never cut in the middle."""
    return "\n".join(textwrap.wrap(name, width, break_long_words=False, break_on_hyphens=False)) or name


def plot_curves(curves: dict[str, Curve], plain: set[str], title: str, key: str, path: Path) -> list[Path]:
    """A line per configuration (the mean over its runs, by epoch) with a band from its lowest to its
    highest run; plain configurations dashed."""
    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, curve in curves.items():
        look = {"linestyle": "--", "color": "0.15"} if label in plain else {"linestyle": "-"}
        (line,) = axes.plot(curve.epochs, curve.mean, marker="o", markersize=2, label=wrapped(label, 40), **look)
        axes.fill_between(curve.epochs, curve.low, curve.high, color=line.get_color(), alpha=0.12, linewidth=0)
    axes.set(xlabel="epoch", ylabel=key)
    axes.set_title(title, fontsize=10)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if key == "learning_rate" and all((c.low > 0).all() for c in curves.values()):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return save(figure, path)


def plot_test_accuracy(values: dict[str, list[float]], plain: set[str], title: str, path: Path) -> list[Path]:
    """A row per configuration: each run a dot, the mean a bar, its value written beside it. The axis
    is zoomed to the values: from 0, 0.970 and 0.978 would look the same."""
    names = list(values)
    figure = Figure(figsize=(8, 1.3 + 0.38 * max(len(names), 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    known = [value for runs in values.values() for value in runs if math.isfinite(value)]
    for row, name in enumerate(names):
        runs = [value for value in values[name] if math.isfinite(value)]
        colour = "tab:orange" if name in plain else "tab:blue"
        axes.plot(runs, [row] * len(runs), "o", color=colour, alpha=0.6, markersize=4)
        if runs:
            mean = float(np.mean(runs))
            axes.plot([mean, mean], [row - 0.3, row + 0.3], color=colour, linewidth=2.5)
            axes.annotate(f"{mean:.3f}", (1.01, row), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    if known:
        low, high = min(known), max(known)
        margin = max(high - low, 0.005) * 0.1
        axes.set_xlim(max(0.0, low - margin), min(1.0, high + margin))
    axes.set_yticks(range(len(names)), [wrapped(name) for name in names], fontsize=8)
    axes.set_ylim(max(len(names), 1) - 0.5, -0.5)  # the first configuration on top
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("test_accuracy (axis zoomed to the values; orange: plain)")
    axes.grid(axis="x", alpha=0.3)
    return save(figure, path)


def plot_effects(verdicts: pd.DataFrame, metric: str, repeats: str, path: Path) -> list[Path]:
    """The forest plot: a row per regularised configuration, its mean difference from plain and the
    interval the verdict was judged on (Holm-adjusted), zero marked, coloured by verdict."""
    effects = verdicts[~verdicts["plain"]].reset_index(drop=True)
    scale = 100 if in_points(metric) else 1
    names = [wrapped(name) for name in effects["configuration"]]
    lines = max((name.count("\n") + 1 for name in names), default=1)
    figure = Figure(figsize=(9, 1.4 + (0.25 + 0.16 * lines) * max(len(effects), 1)))
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
    axes.set_yticks(range(len(effects)), names, fontsize=8)
    axes.set_ylim(max(len(effects), 1) - 0.5, -0.5)
    unit = " (percentage points)" if in_points(metric) else ""
    axes.set(title=f"difference from plain in {metric}: mean and Holm-adjusted interval", xlabel=f"Δ {metric}{unit}")
    axes.grid(axis="x", alpha=0.3)
    return save(figure, path)


@dataclass(frozen=True)
class Panel:
    """One regularised configuration's mean curves (by metric) and its plain partner's."""

    configuration: str
    curves: dict[str, Curve]
    plain: dict[str, Curve]


def plot_mean_curves(panels: list[Panel], title: str, path: Path) -> list[Path]:
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
        axes.set_title(wrapped(panel.configuration, 34), fontsize=8)
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
    figure.suptitle(title, x=0.01, y=0.995, ha="left", fontsize=9)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=1 - 0.75 / figure.get_figheight(), hspace=0.45)
    return save(figure, path)
