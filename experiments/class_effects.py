"""Which classes a regulariser helps: per class of the test split, each configuration's mean paired
difference from plain in recall and precision (per_class.csv), and the recalls as a figure
(per_class.png). Descriptive: no interval, no verdict (ten classes times every configuration would
need a correction of their own)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import figures, study
from plugins.artifacts import FLOAT_FORMAT

PER_CLASS = re.compile(r"test_(precision|recall)\.(\d{1,4})")  # the runner's per-class metrics


def class_metrics(runs: list) -> pd.DataFrame:
    """Each run's per-class test metrics, a row per run id; only the names the runner logs."""
    rows = {
        run.info.run_id: {key: value for key, value in run.data.metrics.items() if PER_CLASS.fullmatch(key)}
        for run in runs
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return frame.reindex(columns=sorted(frame.columns, key=lambda key: (key.split(".")[0], int(key.split(".")[1]))))


def class_effects(table: pd.DataFrame, runs: list, order: list[str]) -> pd.DataFrame:
    """A row per regularised configuration (in ``order``), a column per class metric: the mean over
    repeats of its difference from the plain run trained the same way, in percentage points."""
    metrics = class_metrics(runs)
    if metrics.empty:
        return pd.DataFrame()
    joined = table[["run_id", "configuration", "setup", "repeat", "plain"]].join(metrics, on="run_id")
    columns = list(metrics.columns)
    rows = {}
    for configuration in order:
        mine = joined[joined["configuration"].eq(configuration)]
        if mine.empty or mine["plain"].any():
            continue
        plain = joined[joined["plain"] & joined["setup"].eq(mine["setup"].iloc[0])]
        differences, pairs, _ = study.paired_differences(mine, plain, columns)
        if pairs:
            rows[configuration] = {
                f"d_{column}": 100 * float(np.mean(d)) if len(d) else np.nan for column, d in differences.items()
            }
            rows[configuration]["pairs"] = pairs
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("configuration")


def plot_recall_effects(effects: pd.DataFrame, title: str, path: Path) -> list[Path]:
    """Configurations against classes, each cell the mean difference in recall (pp), red where it
    falls and blue where it rises, on one scale centred at zero."""
    columns = [column for column in effects.columns if column.startswith("d_test_recall.")]
    values = effects[columns].to_numpy(dtype=float)
    classes = [column.rsplit(".", 1)[1] for column in columns]
    figure = Figure(figsize=(1.5 + 0.55 * len(classes), 1.2 + 0.42 * len(effects)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    reach = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0, 1.0)
    image = axes.imshow(values, cmap="RdBu", vmin=-reach, vmax=reach, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            colour = "white" if abs(value) > 0.6 * reach else "black"  # readable on the darkest cells
            axes.text(column, row, f"{value:+.1f}", ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(effects)), [figures.wrapped(name) for name in effects.index], fontsize=8)
    axes.set_xlabel("class")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="Δ recall from plain (pp)")
    return figures.save(figure, path)


def write_class_effects(table: pd.DataFrame, runs: list, order: list[str], repeats: str, folder: Path) -> list[Path]:
    """per_class.csv and per_class.png (.svg); nothing where the runs logged no per-class metrics."""
    effects = class_effects(table, runs, order)
    if effects.empty:
        return []
    effects.to_csv(folder / "per_class.csv", float_format=FLOAT_FORMAT)
    title = f"test recall per class: mean difference from plain over {repeats} (pp), no interval"
    return [folder / "per_class.csv", *plot_recall_effects(effects, title, folder / "per_class.png")]
