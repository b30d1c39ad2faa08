"""Files a training run leaves behind: history.csv, lr_changes.csv, learning_curves.png, model_summary.txt."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


@dataclass(frozen=True)
class LearningRateChange:
    epoch: int  # first epoch trained at the new rate
    old_learning_rate: float
    new_learning_rate: float
    cause: str  # plateau | scheduler | schedule | new fit | earlier fit


LR_CHANGE_COLUMNS = list(LearningRateChange.__dataclass_fields__)


def write_atomically(path: Path, write) -> Path:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(temporary)
    os.replace(temporary, path)
    return path


def write_history(rows: list[dict], path: Path) -> Path:
    """One row per epoch, every metric including the learning rate."""
    return write_atomically(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


def write_lr_changes(changes: list[LearningRateChange], path: Path) -> Path:
    frame = pd.DataFrame([asdict(change) for change in changes], columns=LR_CHANGE_COLUMNS)
    return write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(text: str, path: Path) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def plot_learning_curves(rows: list[dict], path: Path) -> Path:
    """Train vs validation loss and accuracy, and the learning rate, per epoch."""
    history = pd.DataFrame(rows)
    panels = [["loss", "val_loss"], ["accuracy", "val_accuracy"], ["learning_rate"]]
    # A Figure without pyplot keeps no global state, so this is safe off the main thread.
    figure = Figure(figsize=(13, 3.6))
    FigureCanvasAgg(figure)
    for axes, columns in zip(figure.subplots(1, len(panels)), panels):
        for column in (c for c in columns if c in history):
            axes.plot(history["epoch"], history[column], marker="o", markersize=3, label=column)
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        axes.yaxis.set_major_locator(MaxNLocator(nbins=5))
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    # Cheap to draw, as this runs inside fit: the legends name the panels (titles cost a layout pass),
    # one shared x label, a linear rate axis (log tick labels need mathtext) and fixed margins
    # (constrained layout doubles the cost).
    figure.supxlabel("epoch", fontsize=10)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.97, wspace=0.2)
    return write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=80, format="png"))
