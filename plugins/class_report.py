"""Per-class results of a classifier on one split: the confusion matrix, each class's precision and
recall, and the matrix as a figure. Plain NumPy and matplotlib: any backend's predictions will do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts, a row per true class and a column per predicted class."""
    truth, predicted = np.asarray(truth, dtype=int).ravel(), np.asarray(predicted, dtype=int).ravel()
    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class(matrix: np.ndarray) -> dict[str, float]:
    """``precision.<k>`` and ``recall.<k>`` of each class k; NaN where a class was never predicted
    (precision) or never present (recall): undefined, not 0."""
    hits = np.diag(matrix).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = hits / matrix.sum(axis=0)
        recall = hits / matrix.sum(axis=1)
    found = {}
    for k in range(len(matrix)):
        found[f"precision.{k}"] = float(precision[k])
        found[f"recall.{k}"] = float(recall[k])
    return found


def plot_confusion_matrix(matrix: np.ndarray, title: str, path: Path) -> Path:
    """The counts in their cells, shaded by each true class's share, so a class's errors stand out
    whatever its size."""
    classes = len(matrix)
    size = min(3 + 0.45 * classes, 12)
    figure = Figure(figsize=(size, size * 0.85))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[row, column] > 0.6 else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set_xticks(range(classes))
    axes.set_yticks(range(classes))
    axes.set(xlabel="predicted class", ylabel="true class")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    figure.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.1)
    return path
