"""The callback's diagnostics: the gaps from made-up logs, and real fits into a SQLite store."""

from __future__ import annotations

import math

import keras
import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

from plugins import MLflowCallback
from plugins.diagnostics import gaps
from tests.conftest import all_runs

DIAGNOSED = [
    "train_eval_loss",
    "train_eval_accuracy",
    "gap_loss_eval",
    "gap_accuracy_eval",
    "penalty_loss",
    "weight_norm",
]


def test_the_fair_gaps_compare_validation_with_the_training_sample_measured_the_same_way():
    logs = {"loss": 0.9, "accuracy": 0.7, "val_loss": 0.5, "val_accuracy": 0.85}
    found = {"train_eval_loss": 0.4, "train_eval_accuracy": 0.9}
    assert gaps(logs, found) == pytest.approx({"gap_loss_eval": 0.1, "gap_accuracy_eval": 0.05})
    assert gaps({"loss": 0.9}, found) == {}  # no validation this epoch: no gap
    acc = {"loss": 0.9, "acc": 0.7, "val_loss": 0.5, "val_acc": 0.8}
    assert gaps(acc, {"train_eval_loss": 0.4, "train_eval_acc": 0.9}) == pytest.approx(
        {"gap_loss_eval": 0.1, "gap_accuracy_eval": 0.1}
    )


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y


def model_with(dropout: float = 0.0, l2: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(0)
    penalty = keras.regularizers.L2(l2) if l2 else None
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", kernel_regularizer=penalty),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(10, activation="softmax", kernel_regularizer=penalty),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit_diagnosed(digits, model, epochs=4, **arguments):
    x, y = digits
    tracker = MLflowCallback(**arguments)
    model.fit(x[:1200], y[:1200], validation_data=(x[1200:], y[1200:]), epochs=epochs, verbose=0, callbacks=[tracker])
    (run,) = all_runs(mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    return run, {key: [p.value for p in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}


def test_a_dropout_model_s_training_sample_in_inference_mode_has_a_lower_loss_than_keras_training_loss(
    tracking_uri, digits
):
    x, y = digits
    run, curves = fit_diagnosed(digits, model_with(dropout=0.5), diagnostics=True, diagnostics_data=(x[:300], y[:300]))
    assert all(len(curves[key]) == 4 for key in DIAGNOSED)  # one point an epoch
    assert curves["train_eval_loss"][-1] < curves["loss"][-1]  # dropout is off when measured
    assert curves["gap_loss_eval"][-1] == pytest.approx(curves["val_loss"][-1] - curves["train_eval_loss"][-1])
    assert curves["gap_accuracy_eval"][-1] == pytest.approx(
        curves["train_eval_accuracy"][-1] - curves["val_accuracy"][-1]
    )
    assert curves["penalty_loss"] == [0.0] * 4  # no L1/L2
    assert run.data.metrics["best_epoch"] == 3  # so model/ holds the last epoch's weights
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    evaluated = model.evaluate(x[:300], y[:300], verbose=0, return_dict=True)
    assert curves["train_eval_loss"][-1] == pytest.approx(evaluated["loss"], rel=1e-4)
    kernels = [w for w in model.trainable_weights if w.name == "kernel"]
    assert curves["weight_norm"][-1] == pytest.approx(
        math.sqrt(sum(float(np.sum(np.square(keras.ops.convert_to_numpy(w)))) for w in kernels)), rel=1e-5
    )


def test_the_penalty_is_the_l2_term_of_the_loss(tracking_uri, digits):
    model = model_with(l2=1e-3)
    _, curves = fit_diagnosed(digits, model, epochs=2, diagnostics=True)
    kernels = [w for w in model.trainable_weights if w.name == "kernel"]
    squares = sum(float(np.sum(np.square(keras.ops.convert_to_numpy(w)))) for w in kernels)
    assert curves["penalty_loss"][-1] == pytest.approx(1e-3 * squares, rel=1e-4) and curves["penalty_loss"][-1] > 0
    assert "train_eval_loss" not in curves and "gap_loss_eval" not in curves  # no sample given


def test_the_callback_diagnoses_nothing_unless_asked(tracking_uri, digits):
    _, curves = fit_diagnosed(digits, model_with(l2=1e-3), epochs=1)
    assert not set(DIAGNOSED) & set(curves) and "gap_loss" in curves
