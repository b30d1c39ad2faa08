"""Per-class results on a split, against counts worked out by hand."""

from __future__ import annotations

import math

import numpy as np

from plugins.class_report import confusion_matrix, per_class, plot_confusion_matrix


def test_the_matrix_counts_true_rows_against_predicted_columns():
    truth = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 1, 1]
    assert confusion_matrix(truth, predicted, 3).tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]


def test_precision_and_recall_per_class_and_undefined_where_a_class_is_never_predicted():
    found = per_class(np.array([[2, 1, 0], [0, 2, 0], [0, 1, 0]]))
    assert (found["precision.0"], found["recall.0"]) == (1.0, 2 / 3)
    assert (found["precision.1"], found["recall.1"]) == (0.5, 1.0)
    assert math.isnan(found["precision.2"]) and found["recall.2"] == 0.0  # never predicted: no precision
    assert len(found) == 6


def test_the_figure_is_written(tmp_path):
    from matplotlib.image import imread

    path = plot_confusion_matrix(np.array([[5, 1], [0, 4]]), "test split: 10 examples", tmp_path / "m.png")
    assert imread(path).shape[1] >= 400
