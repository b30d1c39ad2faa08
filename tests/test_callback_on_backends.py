"""The callback's behaviour on whatever Keras backend this process runs: TensorFlow in the suite, and
JAX and PyTorch (TensorFlow hidden) where tests/test_backends.py runs this file under them.

Real fits of a tiny model on tiny data, into a real SQLite store."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from plugins import MLflowCallback
from plugins.checkpoint import load_logged_checkpoint

BACKEND = keras.backend.backend()
REQUIRED = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    return x, y


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def halve_every_epoch() -> keras.callbacks.Callback:
    """ReduceLROnPlateau that never sees an improvement (mode max on a falling loss): a cut each epoch."""
    return keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", patience=0, factor=0.5, min_lr=1e-4)


def fit(model, data, tracker, epochs: int = 4, extra=(), initial_epoch: int = 0):
    x, y = data
    return model.fit(
        x[:128],
        y[:128],
        validation_data=(x[128:], y[128:]),
        batch_size=32,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        callbacks=[tracker, *extra],
    )


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(point.step, point.value) for point in client.get_metric_history(run_id, key)]


def test_params_epoch_and_step_metrics_and_every_rate_change(tracking_uri, data):
    tracker = MLflowCallback(log_every_n_steps=2, params={"lab": {"width": 8}})
    fit(tiny_model(), data, tracker, extra=[halve_every_epoch()])
    client = mlflow.MlflowClient()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["keras.backend"] == BACKEND and run.data.params["lab.width"] == "8"
    assert [step for step, _ in history(client, tracker.run_id, "val_loss")] == [0, 1, 2, 3]
    # 4 batches an epoch, a point every 2 optimizer steps: steps 2, 4, ..., 16.
    assert [step for step, _ in history(client, tracker.run_id, "batch_loss")] == list(range(2, 17, 2))
    # The rate each epoch trained at: the plateau's first cut comes at epoch 1's end (epoch 0 set its best).
    assert [rate for _, rate in history(client, tracker.run_id, "learning_rate")] == pytest.approx(
        [0.05, 0.05, 0.025, 0.0125]
    )
    assert run.data.metrics["lr_changes"] == 2  # a cut after the last epoch trains nothing: not counted


def test_the_best_checkpoint_lands_during_training_and_is_the_best_epoch_s(tracking_uri, data, caplog):
    caplog.set_level(logging.WARNING)
    model = tiny_model()
    tracker = MLflowCallback(checkpoint_interval_s=0.0, log_model=False)
    fit(model, data, tracker, epochs=5)
    assert not [record.getMessage() for record in caplog.records if "checkpoints/best.keras" in record.getMessage()]
    client = mlflow.MlflowClient()
    assert [item.path for item in client.list_artifacts(tracker.run_id, "checkpoints")] == ["checkpoints/best.keras"]
    best = client.get_run(tracker.run_id).data.metrics["best_epoch"]
    val_losses = dict(history(client, tracker.run_id, "val_loss"))
    assert best == min(val_losses, key=val_losses.get)
    logged = load_logged_checkpoint(client, tracker.run_id).get_weights()
    assert all(np.array_equal(mine, kept) for mine, kept in zip(logged, tracker.best_weights))


def test_the_logged_model_names_this_backend_is_registered_and_predicts(tracking_uri, data, tmp_path):
    model = tiny_model()
    tracker = MLflowCallback(registered_model_name="tiny", input_example=data[0][:3])
    fit(model, data, tracker, epochs=3)
    client = mlflow.MlflowClient()
    requirements = Path(mlflow.artifacts.download_artifacts(f"runs:/{tracker.run_id}/model/requirements.txt"))
    pinned = {line.split("==")[0] for line in requirements.read_text().split() if "==" in line}
    assert REQUIRED[BACKEND] in pinned
    assert BACKEND == "tensorflow" or "tensorflow" not in pinned
    version = client.get_model_version_by_alias("tiny", "candidate")
    assert version.run_id == tracker.run_id
    predicted = mlflow.pyfunc.load_model("models:/tiny@candidate").predict(data[0][:5])
    model.set_weights(tracker.best_weights)
    assert np.asarray(predicted) == pytest.approx(keras.ops.convert_to_numpy(model(data[0][:5])), abs=1e-5)


def test_a_logged_run_resumes_where_it_stopped(tracking_uri, data):
    first = MLflowCallback(log_model=False)
    model = tiny_model()
    fit(model, data, first, epochs=2)
    again = MLflowCallback(run_id=first.run_id, log_model=False)
    fit(model, data, again, epochs=4, initial_epoch=2)
    client = mlflow.MlflowClient()
    assert again.run_id == first.run_id
    assert [step for step, _ in history(client, first.run_id, "val_loss")] == [0, 1, 2, 3]
    assert client.get_run(first.run_id).info.status == "FINISHED"


def test_diagnostics_evaluate_the_training_sample_each_epoch(tracking_uri, data):
    x, y = data
    tracker = MLflowCallback(diagnostics=True, diagnostics_data=(x[:64], y[:64]), log_model=False)
    fit(tiny_model(), data, tracker, epochs=2)
    client = mlflow.MlflowClient()
    for key in ("train_eval_loss", "gap_loss_eval", "weight_norm", "penalty_loss"):
        assert [step for step, _ in history(client, tracker.run_id, key)] == [0, 1], key
    train_eval = dict(history(client, tracker.run_id, "train_eval_loss"))
    val = dict(history(client, tracker.run_id, "val_loss"))
    gap = dict(history(client, tracker.run_id, "gap_loss_eval"))
    assert gap[1] == pytest.approx(val[1] - train_eval[1], abs=1e-6)
