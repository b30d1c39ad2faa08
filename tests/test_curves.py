"""learning_curves.png: drawn by a helper process, or in this process where the helper cannot."""

from __future__ import annotations

import logging
import math
import multiprocessing
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from plugins import curves

PICTURE = (312, 1040, 4)  # 13 x 3.9 inches at 80 dpi, RGBA


def history(epochs: int, validation: bool = True) -> list[dict]:
    rows = [
        {
            "epoch": epoch,
            "loss": 1.0 / (epoch + 1),
            "accuracy": epoch / epochs,
            "learning_rate": 1e-3 * 0.5 ** (epoch // 3),
        }
        for epoch in range(epochs)
    ]
    if validation:
        for row in rows:
            row.update(val_loss=1.2 * row["loss"], val_accuracy=0.9 * row["accuracy"])
        rows[1]["val_loss"] = math.nan  # a diverged epoch
        del rows[2]["accuracy"]  # a key missing from one epoch
    return rows


@pytest.fixture
def helper(monkeypatch):
    """A helper process of the test's own, ended after it."""
    process = curves.HelperProcess()
    monkeypatch.setattr(curves, "HELPER", process)
    yield process
    process.stop()


def drawn_here(rows: list[dict], path):
    return imread(curves.draw_learning_curves(rows, path))


def test_the_helper_draws_the_same_picture_as_this_process_and_reuses_its_figure(helper, tmp_path):
    # Two fits of different lengths, then one without validation: the second redraws the first's figure.
    for number, rows in enumerate([history(15), history(4), history(6, validation=False)]):
        answer = helper.draw(rows, tmp_path / f"helper-{number}.png")
        assert answer["path"] == str(tmp_path / f"helper-{number}.png") and answer["cpu_s"] > 0
        picture = imread(tmp_path / f"helper-{number}.png")
        assert picture.shape == PICTURE
        assert np.array_equal(picture, drawn_here(rows, tmp_path / f"here-{number}.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # no temporary files left behind
        [f"helper-{n}.png" for n in range(3)] + [f"here-{n}.png" for n in range(3)]
    )


def test_every_point_lies_inside_its_panel_also_when_a_figure_is_redrawn():
    figures: dict = {}
    for rows in [history(15), history(4), history(30)]:  # a long fit, then a shorter, then a longer one
        figure = curves.learning_curves_figure(rows, figures)
        panels = {line.get_label(): axes for axes in figure.axes for line in axes.lines if line.get_visible()}
        assert set(panels) == {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"}
        for name, axes in panels.items():
            points = [(row["epoch"], row[name]) for row in rows if not math.isnan(row.get(name, math.nan))]
            (left, right), (bottom, top) = axes.get_xlim(), axes.get_ylim()
            assert all(left < x < right and bottom < y < top for x, y in points), name
    assert len(figures) == 1  # the three fits shared one figure


def test_a_validation_curve_joins_the_epochs_that_were_validated():
    rows = history(6)
    rows[1]["val_loss"] = 0.9
    for row in rows[0::2]:  # validation_freq=2: no validation keys in epochs 0, 2, 4
        del row["val_loss"], row["val_accuracy"]
    rows[3]["val_loss"] = math.nan  # a diverged epoch still breaks the line
    lines = {line.get_label(): line for axes in curves.learning_curves_figure(rows).axes for line in axes.lines}
    assert list(lines["val_loss"].get_xdata()) == [1, 3, 5]
    assert np.allclose(lines["val_loss"].get_ydata(), [0.9, math.nan, 1.2 / 6], equal_nan=True)
    assert list(lines["val_accuracy"].get_xdata()) == [1, 3, 5]
    assert list(lines["loss"].get_xdata()) == [0, 1, 2, 3, 4, 5]
    assert list(lines["accuracy"].get_xdata()) == [0, 1, 3, 4, 5]  # epoch 2 logged none


def panel_labels(rows: list[dict]) -> list[list[str]]:
    """The labelled lines of each panel (the best epoch's line is not one: its label starts with _)."""
    figure = curves.learning_curves_figure(rows)
    return [[line.get_label() for line in axes.lines if not line.get_label().startswith("_")] for axes in figure.axes]


@pytest.mark.parametrize(
    ("metrics", "middle"),
    [
        (["mae", "mse"], ["mae", "val_mae"]),  # a regression: its first metric
        (["mae", "sparse_categorical_accuracy"], ["sparse_categorical_accuracy", "val_sparse_categorical_accuracy"]),
        (["acc"], ["acc", "val_acc"]),
        ([], None),  # compiled without metrics: no empty panel
    ],
    ids=["regression", "accuracy-second", "acc", "no-metric"],
)
def test_a_model_without_accuracy_gets_its_own_metric_in_the_middle_panel(metrics, middle):
    # The rows as MLflowCallback keeps them: its own columns beside Keras' logs.
    rows = [
        {
            "epoch": epoch,
            "loss": 1.0 / (epoch + 1),
            **{name: 0.5 / (epoch + 1) for name in metrics},
            "val_loss": 1.2 / (epoch + 1),
            **{f"val_{name}": 0.6 / (epoch + 1) for name in metrics},
            "learning_rate": 1e-3,
            "epoch_time_s": 0.2,
            "gap_loss": 0.1,
        }
        for epoch in range(4)
    ]
    expected = [["loss", "val_loss"], middle, ["learning_rate"]]
    assert panel_labels(rows) == [panel for panel in expected if panel]


@pytest.mark.parametrize("rate", [1e-3, 0.05, 3e-5])
def test_the_rate_panel_s_labels_stay_clear_of_the_panel_beside_it_and_inside_the_picture(rate):
    figure = curves.learning_curves_figure(
        [dict(row, learning_rate=rate) for row in history(5)]
    )  # constant: longest labels
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    accuracy, rates = figure.axes[1], figure.axes[2]
    bottom, top = rates.get_ylim()
    shown = [label for label, at in zip(rates.get_yticklabels(), rates.get_yticks()) if bottom <= at <= top]
    labels = [label.get_window_extent(renderer) for label in shown if label.get_text()]
    assert labels and min(box.x0 for box in labels) > accuracy.get_window_extent(renderer).x1
    assert all(box.y0 >= figure.bbox.y0 and box.y1 <= figure.bbox.y1 for box in labels)
    texts = [label.get_text() for label in shown]  # a log scale, labelled 1e-03, 2e-03, 5e-03
    assert len(texts) >= 2 and all(re.fullmatch(r"[125]e-0\d", text) for text in texts), texts


def test_the_plot_names_its_run_marks_the_best_epoch_and_steps_the_rate():
    rows = [dict(row, learning_rate=1e-3 if row["epoch"] < 3 else 1e-4) for row in history(5)]
    figure = curves.learning_curves_figure(rows, title="cnn-l2 schedule=step", best_epoch=2)
    assert figure.texts[0].get_text() == "cnn-l2 schedule=step   (best epoch 2: dashed)"
    best = [line for axes in figure.axes for line in axes.lines if line.get_label() == "_best epoch"]
    assert len(best) == 3 and all(list(line.get_xdata()) == [2, 2] and line.get_visible() for line in best)
    rates = figure.axes[2]
    assert rates.get_yscale() == "log" and rates.lines[0].get_drawstyle() == "steps-post"
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy", "learning rate"]
    unmarked = curves.learning_curves_figure(rows, title="cnn-none")
    assert not any(
        line.get_visible() for axes in unmarked.axes for line in axes.lines if line.get_label() == "_best epoch"
    )


def test_without_a_helper_process_the_plot_is_drawn_here(helper, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    rows = history(5)
    with caplog.at_level(logging.INFO, logger="plugins.curves"):
        path = curves.plot_learning_curves(rows, tmp_path / "learning_curves.png")
    assert np.array_equal(imread(path), drawn_here(rows, tmp_path / "here.png"))
    assert "drawn in this process" in caplog.text and "no-python-here" in caplog.text


def test_on_one_core_no_helper_is_started_and_the_plot_is_drawn_here(helper, tmp_path, monkeypatch):
    monkeypatch.setattr(curves, "_cores", lambda: 1)
    helper.start()
    path = curves.plot_learning_curves(history(5), tmp_path / "learning_curves.png")
    assert imread(path).shape == PICTURE
    assert helper._process is None


def test_a_helper_that_gives_no_answer_in_time_is_replaced(helper, tmp_path, monkeypatch):
    helper.start()
    first = helper._process
    monkeypatch.setattr(curves, "ANSWER_TIMEOUT_S", 0.0)  # a plot takes tens of ms: no answer within 0 s
    path = curves.plot_learning_curves(history(5), tmp_path / "late.png")
    assert imread(path).shape == PICTURE  # drawn here instead
    assert first.wait(timeout=10) != 0  # the helper that missed its time was killed
    monkeypatch.setattr(curves, "ANSWER_TIMEOUT_S", 30.0)
    assert helper.draw(history(5), tmp_path / "next.png")["path"] == str(tmp_path / "next.png")  # by a new helper
    assert helper._process.pid != first.pid


def test_a_helper_whose_output_is_out_of_step_is_replaced(helper, tmp_path, monkeypatch, caplog):
    # Something in the helper's start-up prints to stdout (here a sitecustomize), before its answers.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text('print(\'{"path": "elsewhere.png"}\')\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    rows = history(5)
    with caplog.at_level(logging.INFO, logger="plugins.curves"):
        path = curves.plot_learning_curves(rows, tmp_path / "learning_curves.png")
    assert np.array_equal(imread(path), drawn_here(rows, tmp_path / "here.png"))
    assert "out of step" in caplog.text and helper._process is None  # killed; the next request starts another


def test_a_helper_that_died_between_fits_is_started_again(helper, tmp_path):
    helper.start()
    helper._process.kill()
    helper._process.wait(timeout=10)
    assert helper.draw(history(5), tmp_path / "after.png")["path"] == str(tmp_path / "after.png")


def test_ctrl_c_in_the_terminal_leaves_the_helper_drawing(helper, tmp_path):
    helper.draw(history(3), tmp_path / "before.png")  # the helper is up and past its start
    helper._process.send_signal(signal.SIGINT)  # as a terminal sends it to the whole process group
    assert helper.draw(history(5), tmp_path / "after.png")["path"] == str(tmp_path / "after.png")


def draw_in_forked_child(path: str) -> tuple[dict, int]:
    answer = curves.HELPER.draw(history(4), Path(path))
    return answer, curves.HELPER._process.pid


def test_a_child_forked_while_the_helper_draws_gets_a_helper_of_its_own(helper, tmp_path):
    helper.start()
    parents_helper = helper._process.pid
    with helper._lock:  # as while another thread's plot is being drawn
        with multiprocessing.get_context("fork").Pool(1) as pool:
            answer, childs_helper = pool.apply(draw_in_forked_child, (str(tmp_path / "child.png"),))
    assert answer["path"] == str(tmp_path / "child.png") and childs_helper != parents_helper
    assert helper.draw(history(5), tmp_path / "parent.png")["path"] == str(tmp_path / "parent.png")
    assert helper._process.pid == parents_helper


def test_a_plot_asked_for_while_the_helper_draws_another_is_drawn_here_without_waiting(helper, tmp_path):
    with helper._lock:  # what another fit's request holds while the helper draws its plot
        assert helper.draw(history(5), tmp_path / "busy.png") == {"error": "drawing another fit's plot"}
        path = curves.plot_learning_curves(history(5), tmp_path / "busy.png")
    assert imread(path).shape == PICTURE
