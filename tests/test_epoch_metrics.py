"""One epoch's metrics and the callback's settings in milliseconds: synthetic logs, a model that never fits."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from plugins.epoch_metrics import EpochMetrics, numbers
from plugins.run_binding import RunSettings
from plugins.settings import TrackingSettings


@pytest.fixture(scope="module")
def model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_per_class_metric_is_one_metric_per_class_and_a_matrix_is_left_out_with_one_warning(model, caplog):
    per_class = np.array([0.5, 0.25, 1.0], dtype="float32")  # F1Score(average=None)
    matrix = np.ones((3, 3))
    logs = {"loss": 0.5, "f1_score": per_class, "val_f1_score": per_class, "confusion": matrix, "name": "x"}
    epoch_metrics = EpochMetrics("run-1")
    with caplog.at_level(logging.WARNING):
        first = epoch_metrics.of_epoch(logs, model, None, 1.5)
        second = epoch_metrics.of_epoch(logs, model, None, 2.5)
    assert first["f1_score_0"] == 0.5 and first["f1_score_1"] == 0.25 and first["val_f1_score_2"] == 1.0
    assert not [key for key in first if key.startswith(("confusion", "name"))]
    assert first["epoch_time_s"] == 1.5 and second["epoch_time_s"] == 2.5
    warning = "run-1: 'confusion' is not logged: MLflow metrics are numbers, and its value is an array of shape (3, 3)"
    assert caplog.text.count(warning) == 1
    assert caplog.text.count("'name' is not logged: MLflow metrics are numbers, and its value is str") == 1


def test_the_rate_is_the_one_in_force_not_the_one_keras_logs(model):
    # Keras' LR callbacks put the rate in the logs before or after a change, by their order.
    metrics = EpochMetrics("run-1").of_epoch({"loss": 1.0, "learning_rate": 9.0}, model, 0.05, 0.1)
    assert metrics["learning_rate"] == 0.05


@pytest.mark.parametrize(
    ("logged", "accuracy"),
    [
        ({"acc": 0.75, "val_acc": 0.5}, "acc"),
        ({"sparse_categorical_accuracy": 0.75, "val_sparse_categorical_accuracy": 0.5}, "sparse_categorical_accuracy"),
        (
            {
                "top_k_categorical_accuracy": 1.0,
                "val_top_k_categorical_accuracy": 0.25,
                "accuracy": 0.75,
                "val_accuracy": 0.5,
            },
            "accuracy",
        ),
    ],
    ids=["acc", "sparse_categorical_accuracy", "accuracy-beside-top-k"],
)
def test_the_gaps_follow_the_accuracy_the_model_logs_whatever_its_name(model, logged, accuracy):
    metrics = EpochMetrics("run-1").of_epoch({"loss": 0.4, "val_loss": 0.5, **logged}, model, 0.05, 0.1)
    assert metrics["gap_loss"] == pytest.approx(0.1)  # validation - training
    assert metrics["gap_accuracy"] == pytest.approx(0.25)  # training - validation: 0.75 - 0.5
    assert metrics[accuracy] == 0.75


def test_numbers_sanitise_names_and_keep_numpy_scalars():
    assert numbers({"loss": np.float32(0.5), "acc@1": 1, "bad": None}) == {"loss": 0.5, "acc_1": 1.0}


def test_settings_are_frozen():
    settings = TrackingSettings(monitor="val_accuracy", output_dir=Path("out"))
    with pytest.raises(AttributeError):
        settings.monitor = "val_loss"
    assert settings.spool_base == Path("out")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"mode": "best"}, "mode='best': expected one of auto, min, max"),
        ({"log_every_n_steps": 0}, "log_every_n_steps=0: expected None or a whole number >= 1"),
        ({"log_every_n_steps": True}, "log_every_n_steps=True: expected None or a whole number >= 1"),
        ({"metrics_interval_s": -1}, "metrics_interval_s=-1: expected a number of seconds >= 0"),
        ({"flush_timeout_s": float("nan")}, "flush_timeout_s=nan: expected a number of seconds >= 0"),
        ({"run": RunSettings(wait_for_server_s="5")}, "wait_for_server_s='5': expected a number of seconds >= 0"),
        ({"diagnostics_data": ([1, 2], [1])}, "diagnostics_data: expected (x, y), a sample of the training data"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_by_name(arguments, message):
    with pytest.raises(ValueError) as refused:
        TrackingSettings(**arguments)
    assert str(refused.value).startswith(message)
