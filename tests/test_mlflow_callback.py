"""MLflowCallback: real tiny fits into a SQLite store under tmp_path, plus hooks driven with synthetic logs."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.utils.file_utils import local_file_uri_to_path as local_artifact_path
from sklearn.datasets import load_digits

from plugins import MLflowCallback, keras_saving, model_facts
from plugins.checkpoint import load_logged_checkpoint
from plugins.epoch_metrics import EpochMetrics
from plugins.params import TRUNCATED
from plugins.publisher import Publisher
from plugins.run_binding import is_chief
from tests.conftest import EPOCH_KEYS, ROOT, all_runs, free_port, stop_mlflow_server
from tests.faults import RaiseAtEpoch, RaiseAtStep


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return (x[:1200], y[:1200]), (x[1200:1500], y[1200:1500])


def tiny_model(learning_rate=1e-3) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(digits, callbacks, epochs=4, model=None):
    (x, y), validation = digits
    model = model or tiny_model()
    model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=64, callbacks=callbacks, verbose=0)
    return model


def only_run(tracking_uri):
    runs = all_runs(tracking_uri)
    assert len(runs) == 1
    return runs[0]


def history(tracking_uri, run_id, key):
    """[(step, value)] of a metric, in step order."""
    points = mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return sorted((point.step, point.value) for point in points)


def artifact_csv(tracking_uri, run_id, path):
    return pd.read_csv(mlflow.MlflowClient(tracking_uri).download_artifacts(run_id, path))


def plateau():
    # patience=0 and a huge min_delta: every epoch after the first counts as a plateau
    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=10.0, min_lr=1e-9)


@dataclass(frozen=True)
class ReferenceFit:
    uri: str
    run: Any
    client: mlflow.MlflowClient

    def history(self, key):
        return history(self.uri, self.run.info.run_id, key)

    def csv(self, path):
        return artifact_csv(self.uri, self.run.info.run_id, path)


@pytest.fixture(scope="module")
def reference_fit(tmp_path_factory, empty_store, digits) -> ReferenceFit:
    """One real fit whose run the read-only tests below share: every default of the callback, plus a
    plateau callback after it, params, an input example, batch points every 5 steps and a registry name."""
    folder = tmp_path_factory.mktemp("reference")
    shutil.copy(empty_store, folder / "mlflow.db")
    uri, previous = f"sqlite:///{folder / 'mlflow.db'}", mlflow.get_tracking_uri()
    params = {f"group.key_{i:03d}": i for i in range(250)}
    params.update({"odd(name)!": 1, "long": "x" * 7000, "db.password": "hunter2"})
    tracker = MLflowCallback(
        params=params,
        input_example=digits[1][0][:3],
        log_every_n_steps=5,
        registered_model_name="digits-classifier",
    )
    mlflow.set_tracking_uri(uri)
    try:
        fit(digits, [tracker, plateau()], epochs=5)
    finally:
        mlflow.set_tracking_uri(previous)
    return ReferenceFit(uri, only_run(uri), mlflow.MlflowClient(uri))


@pytest.fixture
def reference(reference_fit, monkeypatch) -> ReferenceFit:
    """The reference fit's run, with its store as the tracking and registry URI (for runs:/ and models:/)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reference_fit.uri)
    mlflow.set_tracking_uri(reference_fit.uri)
    return reference_fit


def test_one_point_per_epoch_for_every_key_and_the_run_ends_completed(reference):
    run = reference.run
    assert run.info.status == "FINISHED"  # the callback started this run, so it ended it
    for key in EPOCH_KEYS:
        assert [step for step, _ in reference.history(key)] == [0, 1, 2, 3, 4], key
    loss, val_loss, gap = (dict(reference.history(key)) for key in ("loss", "val_loss", "gap_loss"))
    assert gap[2] == pytest.approx(val_loss[2] - loss[2], abs=1e-6)
    frame = reference.csv("history.csv")
    assert list(frame["epoch"]) == [0, 1, 2, 3, 4] and set(EPOCH_KEYS) <= set(frame.columns)
    assert "stopped_epoch" not in run.data.metrics and run.data.tags["stop_reason"] == "completed"


def test_batch_points_every_n_optimizer_steps(reference):
    assert [step for step, _ in reference.history("batch_loss")] == list(range(5, 5 * 19 + 1, 5))  # 19 a epoch


def test_learning_rate_under_a_plateau_callback_that_runs_after_the_tracker(reference):
    rates = [rate for _, rate in reference.history("learning_rate")]
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])
    assert reference.run.data.metrics["lr_changes"] == 3
    changes = reference.csv("lr_changes.csv")
    assert list(changes["epoch"]) == [2, 3, 4] and list(changes["cause"]) == ["plateau"] * 3
    assert changes["new_learning_rate"].iloc[0] == pytest.approx(5e-4)


def test_params_are_sanitised_truncated_and_batched(reference):
    logged = reference.run.data.params
    assert all(f"group.key_{i:03d}" in logged for i in range(250))
    assert logged["odd_name__"] == "1"
    assert logged["long"].endswith(TRUNCATED) and len(logged["long"]) == 6000
    assert logged["db.password"] == "[redacted]"
    # The backend it trained on, with its version: provenance.
    import tensorflow as tf

    assert (logged["keras.backend"], logged["keras.backend_version"]) == ("tensorflow", tf.__version__)
    assert logged["keras.version"] == keras.__version__


def test_best_checkpoint_reproduces_best_val_loss(reference, digits):
    run = reference.run
    best_step, best_value = min(reference.history("val_loss"), key=lambda point: point[1])
    assert run.data.metrics["best_epoch"] == best_step
    assert run.data.metrics["best_val_loss"] == pytest.approx(best_value)
    checkpoint = load_logged_checkpoint(reference.client, run.info.run_id)  # the logged model's file: the one copy
    x_val, y_val = digits[1]
    assert checkpoint.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"] == pytest.approx(best_value, rel=1e-4)


def test_the_run_stores_its_model_once(reference):
    """The logged model is the run's model and its best checkpoint: no model/ nor checkpoints/ beside it."""
    run = reference.run
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    run_files = stored_files(run.info.artifact_uri)
    model_files = stored_files(logged.artifact_location)
    assert set(run_files) == {"history.csv", "learning_curves.png", "lr_changes.csv", "model_summary.txt"}
    keras_files = [path for path in [*run_files, *model_files] if path.endswith(".keras")]
    assert keras_files == ["data/model.keras"]
    saved = model_files["data/model.keras"]
    assert sum(model_files.values()) < saved + 10_000  # beside it, small files: MLmodel, requirements, code


def test_where_no_logged_model_can_be_made_the_run_s_own_model_folder_is_its_one_copy(
    tracking_uri, digits, caplog, monkeypatch
):
    """An artifact store that cannot hold a logged model (a file where its models/ folder goes): the
    same files go into the run's model/, which runs:/<run>/model, the registry and a resume all read."""
    store = Path(local_artifact_path(tracking_uri.removeprefix("sqlite:///"))).parent / "artifacts"
    (store / "models").parent.mkdir()
    (store / "models").write_text("not a folder")
    mlflow.create_experiment("cramped", artifact_location=store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cramped")  # not experiment_name=: that stays set after the test
    tracker = MLflowCallback(registered_model_name="fallback")
    model = fit(digits, [tracker], epochs=3)
    assert "no logged model (" in caplog.text and "the model goes into the run's files as model/" in caplog.text
    client = mlflow.MlflowClient()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and not run.outputs.model_outputs
    assert mlflow.search_logged_models(output_format="list") == []  # the one it began is removed
    run_files = stored_files(run.info.artifact_uri)
    assert [path for path in run_files if path.endswith(".keras")] == ["model/data/model.keras"]
    model.set_weights(tracker.best_weights)
    x_val = digits[1][0][:5]
    expected = keras.ops.convert_to_numpy(model(x_val))
    version = client.get_model_version_by_alias("fallback", "candidate")
    assert version.run_id == tracker.run_id and version.source.endswith(f"{tracker.run_id}/artifacts/model")
    for uri in (f"runs:/{tracker.run_id}/model", "models:/fallback@candidate"):
        np.testing.assert_allclose(mlflow.keras.load_model(uri).predict(x_val, verbose=0), expected, atol=1e-6)
    resumed_from = load_logged_checkpoint(client, tracker.run_id)
    np.testing.assert_allclose(resumed_from.predict(x_val, verbose=0), expected, atol=1e-6)


def stored_files(artifact_uri: str) -> dict[str, int]:
    """Every file under a local artifact location, with its size in bytes."""
    root = Path(local_artifact_path(artifact_uri))
    return {path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()}


def test_the_best_model_is_a_logged_model_with_its_epoch_s_metrics_registered_with_an_alias(reference, digits):
    run, client = reference.run, reference.client
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    best = int(run.data.metrics["best_epoch"])
    assert (model.name, model.source_run_id, str(model.status)) == ("model", run.info.run_id, "READY")
    assert model.tags["run_name"] == run.info.run_name
    assert model.params == run.data.params and model.params["db.password"] == "[redacted]"  # to tell models apart
    assert [(output.model_id, output.step) for output in run.outputs.model_outputs] == [(model.model_id, best)]
    linked = {metric.key: (metric.step, metric.value) for metric in model.metrics}
    assert linked["val_loss"] == (best, pytest.approx(run.data.metrics["best_val_loss"]))
    x_val, y_val = digits[1]
    for uri in (f"models:/{model.model_id}", f"runs:/{run.info.run_id}/model", "models:/digits-classifier@candidate"):
        loaded = mlflow.keras.load_model(uri)
        loss = loaded.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"]
        assert loss == pytest.approx(run.data.metrics["best_val_loss"], rel=1e-4), uri
    import tensorflow as tf

    requirements = open(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model/requirements.txt"))
    requirements = requirements.read().split()
    assert f"keras=={keras.__version__}" in requirements and f"tensorflow=={tf.__version__}" in requirements
    versions = client.search_model_versions("name='digits-classifier'")
    assert [(v.version, v.run_id, v.status, v.source) for v in versions] == [
        (1, run.info.run_id, "READY", f"models:/{model.model_id}")
    ]
    assert client.get_model_version_by_alias("digits-classifier", "candidate").version == 1


def test_an_earlier_best_epoch_is_saved_and_the_model_keeps_its_final_weights(tracking_uri, digits):
    # mode="max" on val_loss, which falls: the first epoch is the best, so the final save needs
    # weights that the model no longer holds.
    model = tiny_model()
    final = {}
    keep_last = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: final.update(weights=model.get_weights())
    )
    fit(digits, [keep_last, MLflowCallback(monitor="val_loss", mode="max")], epochs=4, model=model)
    for after_fit, last_epoch in zip(model.get_weights(), final["weights"], strict=True):
        np.testing.assert_array_equal(after_fit, last_epoch)
    run = only_run(tracking_uri)
    val_loss = history(tracking_uri, run.info.run_id, "val_loss")
    assert run.data.metrics["best_epoch"] == 0 and val_loss[0][1] > val_loss[-1][1]
    checkpoint = load_logged_checkpoint(mlflow.MlflowClient(tracking_uri), run.info.run_id)
    x_val, y_val = digits[1]
    assert checkpoint.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"] == pytest.approx(
        val_loss[0][1], rel=1e-4
    )
    logged = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    assert logged.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"] == pytest.approx(val_loss[0][1], rel=1e-4)


def test_early_stopping_facts(tracking_uri, digits):
    # min_delta so large that no epoch improves: stops after patience epochs
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=10.0, restore_best_weights=True)
    fit(digits, [stopper, MLflowCallback(log_model=False)], epochs=20)
    run = only_run(tracking_uri)
    assert run.data.metrics["stopped_epoch"] == stopper.stopped_epoch == 2
    assert run.data.tags["stop_reason"] == "early_stopping"
    assert len(history(tracking_uri, run.info.run_id, "loss")) == 3


def test_logs_into_the_active_run_and_leaves_it_open(tracking_uri, digits):
    with mlflow.start_run() as outer:
        fit(digits, [MLflowCallback(log_model=False, params={"trainer": {"seed": 3}})], epochs=2)
        assert mlflow.active_run().info.run_id == outer.info.run_id
        mlflow.log_metric("after_fit", 1.0)
    run = only_run(tracking_uri)
    assert run.data.params["trainer.seed"] == "3" and run.data.metrics["after_fit"] == 1.0
    assert int(run.data.params["model.total_params"]) == 64 * 32 + 32 + 32 * 10 + 10


def test_a_second_fit_into_the_same_run_carries_on_its_steps(tracking_uri, digits):
    # Two stages in one run, as when a head is trained and then the whole model fine-tuned at a
    # lower rate; Keras numbers the second fit's epochs from 0 again.
    model = tiny_model()
    tracker = MLflowCallback(log_model=False)
    with mlflow.start_run() as run:
        fit(digits, [tracker], epochs=2, model=model)
        model.optimizer.learning_rate = 1e-4
        fit(digits, [tracker], epochs=3, model=model)
    for key in EPOCH_KEYS:
        assert [step for step, _ in history(tracking_uri, run.info.run_id, key)] == [0, 1, 2, 3, 4], key
    rates = [value for _, value in history(tracking_uri, run.info.run_id, "learning_rate")]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-4])
    val_loss = history(tracking_uri, run.info.run_id, "val_loss")
    best_step, best_value = min(val_loss, key=lambda point: point[1])
    logged = mlflow.MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert logged.data.metrics["best_epoch"] == best_step == tracker.best_epoch
    assert logged.data.metrics["best_val_loss"] == pytest.approx(best_value)
    assert logged.data.tags["stop_reason"] == "completed"
    assert artifact_csv(tracking_uri, run.info.run_id, "history.csv")["epoch"].tolist() == [0, 1, 2, 3, 4]
    changes = artifact_csv(tracking_uri, run.info.run_id, "lr_changes.csv")
    assert changes[["epoch", "cause"]].to_dict("records") == [{"epoch": 2, "cause": "new fit"}]


def test_epochs_whose_metrics_never_arrived_are_named_when_training_goes_on_past_them(tracking_uri, digits, caplog):
    # kill -9 after epoch 2 ended: its backup was written, its metrics were still on their way.
    # The resume restores the backup and starts at epoch 3.
    model = tiny_model()
    (x, y), validation = digits
    with mlflow.start_run() as run:
        fit(digits, [MLflowCallback(log_model=False)], epochs=2, model=model)
    with mlflow.start_run(run_id=run.info.run_id):
        model.fit(
            x,
            y,
            validation_data=validation,
            initial_epoch=3,
            epochs=5,
            batch_size=64,
            callbacks=[MLflowCallback(log_model=False)],
            verbose=0,
        )
    logged = mlflow.MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert logged.data.tags["missing_epochs"] == "2"
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0, 1, 3, 4]
    assert any("has no metrics of epochs 2 " in record.getMessage() for record in caplog.records)


def test_under_mlflow_run_id_it_never_makes_a_second_run(tracking_uri, digits, monkeypatch):
    client = mlflow.MlflowClient(tracking_uri)
    created = client.create_run(client.create_experiment("projects"))
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    fit(digits, [MLflowCallback(log_model=False)], epochs=2)
    mlflow.end_run()  # what `mlflow run` does when the script ends
    run = only_run(tracking_uri)
    assert run.info.run_id == created.info.run_id
    assert len(history(tracking_uri, run.info.run_id, "val_loss")) == 2


@pytest.mark.parametrize("steps_per_execution", [4])
def test_batch_metrics_every_n_steps_when_keras_runs_several_steps_per_call(tracking_uri, digits, steps_per_execution):
    (x, y), validation = digits
    model = tiny_model()
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", steps_per_execution=steps_per_execution
    )
    model.fit(
        x[:400],
        y[:400],
        validation_data=validation,
        epochs=2,
        batch_size=10,
        verbose=0,
        callbacks=[MLflowCallback(log_model=False, log_every_n_steps=5)],
    )
    steps = [step for step, _ in history(tracking_uri, only_run(tracking_uri).info.run_id, "batch_loss")]
    # 80 steps, one batch hook per steps_per_execution of them: a point at the first hook at or past
    # each multiple of 5 (every 5 steps when 5 steps run per call; 8, 12, 16, 20, 28, ... for 4).
    assert steps == [math.ceil(multiple / steps_per_execution) * steps_per_execution for multiple in range(5, 81, 5)]


def fit_broken_at_step_29(digits, model, tracker):
    """Epoch 0 (steps 1-19) ends, epoch 1 breaks at its 10th step; the tracker is ended as the runner does."""
    with pytest.raises(RuntimeError, match="injected fault at step 29"):
        fit(digits, [tracker, RaiseAtStep(29)], epochs=3, model=model)
    tracker.end("FAILED")


def test_batch_metrics_of_an_epoch_that_never_ended_land_when_the_run_is_ended(tracking_uri, digits):
    with mlflow.start_run() as run:
        fit_broken_at_step_29(digits, tiny_model(), MLflowCallback(log_model=False, log_every_n_steps=5))
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "batch_loss")] == [5, 10, 15, 20, 25]
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "loss")] == [0]


def test_batch_metrics_of_a_long_epoch_are_sent_before_it_ends(tracking_uri, digits):
    tracker = MLflowCallback(log_model=False, log_every_n_steps=5, metrics_interval_s=0)  # any epoch is a long one
    client = mlflow.MlflowClient(tracking_uri)
    seen_during_the_epoch = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 15:  # of 19 in the epoch: steps 5 and 10 were logged before it, 15 just now
                deadline = time.monotonic() + 30  # a bounded wait for the sender thread, not a speed check
                while not client.get_metric_history(tracker.run_id, "batch_loss") and time.monotonic() < deadline:
                    time.sleep(0.05)
                seen_during_the_epoch.extend(
                    point.step for point in client.get_metric_history(tracker.run_id, "batch_loss")
                )

    fit(digits, [tracker, Watch()], epochs=1)
    assert 5 in seen_during_the_epoch


def test_hooks_with_synthetic_logs(tracking_uri):
    model = tiny_model()
    tracker = MLflowCallback(monitor="val_loss", log_model=False)
    callbacks = keras.callbacks.CallbackList([tracker], model=model)
    callbacks.set_params({"epochs": 3, "steps": 1})
    callbacks.on_train_begin()
    for epoch, (loss, val_loss) in enumerate([(1.0, 1.2), (0.6, 0.9), (0.4, 0.95)]):
        callbacks.on_epoch_begin(epoch)
        callbacks.on_train_batch_begin(0)
        callbacks.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss, "accuracy": 0.5, "val_accuracy": 0.25})
    callbacks.on_train_end()
    run = only_run(tracking_uri)
    assert run.data.metrics["best_epoch"] == 1 and run.data.metrics["best_val_loss"] == pytest.approx(0.9)
    gaps = history(tracking_uri, run.info.run_id, "gap_loss")
    assert [step for step, _ in gaps] == [0, 1, 2]
    assert [gap for _, gap in gaps] == pytest.approx([0.2, 0.3, 0.55])
    assert history(tracking_uri, run.info.run_id, "gap_accuracy")[0][1] == pytest.approx(0.25)
    assert tracker.best_epoch == 1


def test_without_validation_data_model_is_the_last_epochs_model(tracking_uri, digits, caplog):
    (x, y), _ = digits
    model = tiny_model()
    model.fit(x, y, epochs=2, batch_size=64, callbacks=[MLflowCallback()], verbose=0)
    assert "no epoch logged 'val_loss', so there is no best epoch; the run's model is the last epoch's" in caplog.text
    assert caplog.text.count("MLflowCallback monitors 'val_loss', which is not in the logs: accuracy, loss") == 1
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED" and "best_epoch" not in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id)}
    assert "checkpoints" not in artifacts  # no best epoch, so no best checkpoint
    assert "model" not in artifacts  # the logged model is the run's model
    logged = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    for mine, theirs in zip(model.get_weights(), logged.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


class SubclassedModel(keras.Model):
    """Built by its first batch, after on_train_begin: it has no weights to count before that."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.scores = keras.layers.Dense(10, activation="softmax")

    def call(self, inputs):
        return self.scores(self.hidden(inputs))


def test_mlflow_autologging_of_the_same_fit_is_named_in_a_warning(tracking_uri, caplog):
    callback = MLflowCallback(log_model=False)
    callback.set_model(tiny_model())
    mlflow.tensorflow.autolog(silent=True)
    try:
        callback.on_train_begin()
        callback.end()
    finally:
        mlflow.tensorflow.autolog(disable=True)
    callback.on_train_begin()
    callback.end()
    warnings = [record.message for record in caplog.records if "autologging" in record.message]
    assert warnings == [
        "MLflow autologging of Keras fits is on (mlflow.tensorflow.autolog()): it logs this fit's "
        "metrics too, so each epoch's points appear twice, it slows training, and its own logged model is "
        "also named 'model', so runs:/<run id>/model may load autolog's model (of the first fit) instead of "
        "this callback's best one (load that by its models:/<model id>); switch it off with "
        "mlflow.tensorflow.autolog(disable=True)"
    ]


def test_a_subclassed_model_is_tracked_once_its_first_batch_built_it(tracking_uri, digits):
    keras.utils.set_random_seed(0)
    model = SubclassedModel()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    fit(digits, [MLflowCallback()], epochs=2, model=model)
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.total_params"] == str(model.count_params()) == str(64 * 16 + 16 + 16 * 10 + 10)
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0, 1]
    client = mlflow.MlflowClient(tracking_uri)
    assert {"history.csv", "model_summary.txt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(run.outputs.model_outputs) == 1  # its model
    summary = open(client.download_artifacts(run.info.run_id, "model_summary.txt")).read()
    assert f"Trainable params: {model.count_params():,}" in summary


def test_the_logged_model_takes_each_input_with_its_own_name_and_dtype(tracking_uri):
    rng = np.random.default_rng(0)
    tokens, scale = keras.Input((5,), dtype="int32", name="tokens"), keras.Input((2,), name="scale")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(tokens))
    scores = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([pooled, scale]))
    model = keras.Model([tokens, scale], scores)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = {"tokens": rng.integers(0, 20, (64, 5)).astype("int32"), "scale": rng.random((64, 2)).astype("float32")}
    y = rng.integers(0, 3, 64)
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[MLflowCallback()])
    logged = mlflow.pyfunc.load_model(f"runs:/{only_run(tracking_uri).info.run_id}/model")
    signature = logged.metadata.signature
    assert [(spec.name, spec.type, spec.shape) for spec in signature.inputs.inputs] == [
        ("tokens", np.dtype("int32"), (-1, 5)),
        ("scale", np.dtype("float32"), (-1, 2)),
    ]
    assert [(spec.type, spec.shape) for spec in signature.outputs.inputs] == [(np.dtype("float32"), (-1, 3))]
    given = {"tokens": x["tokens"][:4], "scale": x["scale"][:4]}
    np.testing.assert_allclose(logged.predict(given), model.predict(given, verbose=0), rtol=1e-5)


def test_token_ids_declared_float32_are_served_as_the_input_example_gives_them(tracking_uri):
    """keras-io's text classifiers declare Input(dtype="float32") and feed integer token ids: the
    signature takes the input example's dtype, so pyfunc serves the ids the model was trained on."""
    rng = np.random.default_rng(0)
    tokens = keras.Input((6,), name="tokens")  # float32, as declared
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 4)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = rng.integers(0, 30, (64, 6)), rng.integers(0, 2, 64)  # int64 token ids
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[MLflowCallback(input_example=x[:3])])
    logged = mlflow.pyfunc.load_model(f"runs:/{only_run(tracking_uri).info.run_id}/model")
    assert [(spec.type, spec.shape) for spec in logged.metadata.signature.inputs.inputs] == [
        (np.dtype("int64"), (-1, 6))
    ]
    np.testing.assert_allclose(logged.predict(x[:4]), model.predict(x[:4], verbose=0), rtol=1e-5)


def test_a_signature_names_each_output_of_a_model_with_several():
    features = keras.Input((4,), name="features")
    model = keras.Model(
        features, [keras.layers.Dense(3, name="kind")(features), keras.layers.Dense(1, name="size")(features)]
    )
    outputs = model_facts.signature(model).outputs.inputs
    assert [(spec.name, spec.shape) for spec in outputs] == [("kind", (-1, 3)), ("size", (-1, 1))]


def test_pyfunc_serves_each_output_of_a_model_with_several_by_its_name(tracking_uri):
    rng = np.random.default_rng(0)
    features = keras.Input((4,), name="features")
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(features)
    model = keras.Model(features, [kind, keras.layers.Dense(1, name="size")(features)])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    x, y = rng.random((64, 4)).astype("float32"), [rng.integers(0, 3, 64), rng.random((64, 1))]
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[MLflowCallback()])
    served = mlflow.pyfunc.load_model(f"runs:/{only_run(tracking_uri).info.run_id}/model").predict(x[:4])
    expected_kind, expected_size = model.predict(x[:4], verbose=0)
    assert sorted(served) == ["kind", "size"]
    np.testing.assert_allclose(served["kind"], expected_kind, rtol=1e-5)
    np.testing.assert_allclose(served["size"], expected_size, rtol=1e-5)


REVIEWS = [["good film"], ["bad film"], ["great plot"], ["awful plot"]]


def fit_text_model(callbacks) -> keras.Model:
    """A model with a string input: TextVectorization inside it, fitted on four reviews."""
    import tensorflow as tf

    reviews, labels = tf.constant(REVIEWS * 16), tf.constant([1, 0, 1, 0] * 16)
    keras.utils.set_random_seed(0)
    words = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=2)
    words.adapt(reviews)
    text = keras.Input((1,), dtype="string")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(words(text)))
    model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(pooled))
    model.compile("adam", "binary_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((reviews, labels)).batch(16)
    model.fit(data, validation_data=data, epochs=2, verbose=0, callbacks=callbacks)
    return model


# 3600: saved at the end from the trained model. 0: also written during training, from a copy of the
# model, which must hold the vocabulary that TextVectorization keeps beside its weights.
@pytest.mark.parametrize("checkpoint_interval_s", [3600, 0])
def test_a_text_model_is_served_from_strings_and_its_files_land(tracking_uri, checkpoint_interval_s):
    import tensorflow as tf

    tracker = MLflowCallback(checkpoint_interval_s=checkpoint_interval_s)
    model = fit_text_model([tracker])
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert tracker.best_epoch == 1  # the model holds the best epoch's weights
    reviews = tf.constant(REVIEWS)  # Keras takes text as TensorFlow strings
    expected = model.predict(reviews, verbose=0)
    logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert [(spec.type, spec.shape) for spec in logged.metadata.signature.inputs.inputs] == [
        (np.dtype(object), (-1, 1))
    ]
    np.testing.assert_allclose(logged.predict(np.array(REVIEWS, dtype=object)), expected, rtol=1e-6)
    as_frame = logged.predict(pd.DataFrame(REVIEWS, columns=["review"]))
    np.testing.assert_allclose(np.asarray(as_frame), expected, rtol=1e-6)
    logged_keras = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_allclose(logged_keras.predict(reviews, verbose=0), expected, rtol=1e-6)
    client = mlflow.MlflowClient(tracking_uri)
    checkpoint = load_logged_checkpoint(client, run.info.run_id)  # the checkpoint's (or model/'s) file
    np.testing.assert_allclose(checkpoint.predict(reviews, verbose=0), expected, rtol=1e-6)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_text_model_s_json_request(tracking_uri, tmp_path):
    """The logged model behind `mlflow models serve` (MLflow's scoring server, this environment):
    a JSON request of strings gets the model's predictions."""
    import urllib.request

    import tensorflow as tf

    model = fit_text_model([MLflowCallback()])
    (logged,) = mlflow.search_logged_models(output_format="list")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{logged.model_id}"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port := free_port())],
        env={**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True,
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": REVIEWS}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.load(urlopen_when_up(request, server, tmp_path / "serve.log"))
    finally:
        stop_mlflow_server(server)
    expected = model.predict(tf.constant(REVIEWS), verbose=0)
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5)


def urlopen_when_up(request, server: subprocess.Popen, log_file, timeout_s: float = 120):
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return urllib.request.urlopen(request, timeout=30)
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError):
                raise
        assert server.poll() is None and time.monotonic() < deadline, log_file.read_text()[-2000:]
        time.sleep(0.5)


def test_the_checkpoint_lands_when_mlflow_cannot_write_model_folder(tracking_uri, digits, caplog):
    x_val, y_val = digits[1]
    # MLflow takes NumPy arrays, not TensorFlow tensors, as an input example: model/ cannot be written.
    tracker = MLflowCallback(input_example=keras.ops.convert_to_tensor(x_val[:2]), flush_timeout_s=0)
    fit(digits, [tracker], epochs=3)
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED"
    client = mlflow.MlflowClient(tracking_uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "checkpoints",
        "history.csv",
        "learning_curves.png",
        "lr_changes.csv",
        "model_summary.txt",
    }
    checkpoint = keras.models.load_model(client.download_artifacts(run.info.run_id, "checkpoints/best.keras"))
    loss = checkpoint.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(run.data.metrics["best_val_loss"], rel=1e-4)
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert (
        len(errors) == 1 and "writing model/ failed (MlflowException: Expected one of the following types:" in errors[0]
    )


def test_constructor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="mode='best'"):
        MLflowCallback(mode="best")
    with pytest.raises(ValueError, match=r"params=\['lr', 0.1\]: expected a mapping of names to values"):
        MLflowCallback(params=["lr", 0.1])
    with pytest.raises(ValueError, match="log_every_n_steps=0"):
        MLflowCallback(log_every_n_steps=0)
    with pytest.raises(ValueError, match=r"metrics_interval_s='1': expected a number of seconds >= 0"):
        MLflowCallback(metrics_interval_s="1")
    with pytest.raises(ValueError, match=r"checkpoint_interval_s=-5: expected a number of seconds >= 0"):
        MLflowCallback(checkpoint_interval_s=-5)
    with pytest.raises(ValueError, match=r"flush_timeout_s=nan: expected a number of seconds >= 0"):
        MLflowCallback(flush_timeout_s=float("nan"))


def test_an_output_dir_that_cannot_be_a_folder_is_refused_before_training(tmp_path):
    (tmp_path / "a-file").write_text("")
    wanted = tmp_path / "a-file" / "mlflow"
    with pytest.raises(ValueError) as refused:
        MLflowCallback(output_dir=wanted)
    assert str(refused.value) == f"output_dir='{wanted}': expected a folder that can be made (Not a directory)"
    made = tmp_path / "outputs" / "mlflow"
    assert MLflowCallback(output_dir=made).settings.output_dir == made and made.is_dir()


def test_failed_fit_in_the_runner_pattern_keeps_the_best_checkpoint(tracking_uri, digits):
    tracker = MLflowCallback(log_model=False)
    with pytest.raises(RuntimeError), mlflow.start_run():
        try:
            fit(digits, [tracker, RaiseAtEpoch(3)], epochs=6)
        except RuntimeError:
            tracker.end("FAILED")
            raise
    run = only_run(tracking_uri)
    assert run.info.status == "FAILED" and run.data.tags["stop_reason"] == "error"
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0, 1, 2]
    client = mlflow.MlflowClient(tracking_uri)
    assert keras.models.load_model(client.download_artifacts(run.info.run_id, "checkpoints/best.keras"))


@pytest.mark.parametrize("same_callback", [False, True])
def test_a_fit_that_raised_ends_its_run_failed_when_the_next_fit_in_the_process_begins(
    tracking_uri, digits, caplog, same_callback
):
    # A notebook, or a loop that catches each fit's error: no process exit comes to end the first run.
    first = MLflowCallback(log_model=False)
    with pytest.raises(RuntimeError):
        fit(digits, [first, RaiseAtEpoch(2)], epochs=4)
    failed_id = first.run_id
    second = first if same_callback else MLflowCallback(log_model=False)
    fit(digits, [second], epochs=3)
    client = mlflow.MlflowClient(tracking_uri)
    failed, finished = client.get_run(failed_id), client.get_run(second.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["stop_reason"] == "error"
    assert failed.data.tags["failure.reason"] == "fit never reached its end: it raised or was interrupted"
    assert [step for step, _ in history(tracking_uri, failed_id, "val_loss")] == [0, 1]
    assert {a.path for a in client.list_artifacts(failed_id)} >= {"checkpoints", "history.csv", "learning_curves.png"}
    assert finished.info.status == "FINISHED" and second.run_id != failed_id
    assert [step for step, _ in history(tracking_uri, second.run_id, "val_loss")] == [0, 1, 2]
    assert mlflow.active_run() is None
    assert f"MLflow run {failed_id} of an earlier fit that raised or was interrupted was still open" in caplog.text


def test_a_fit_run_by_another_fit_s_callback_leaves_that_fit_s_run_open(tracking_uri, digits, caplog):
    class FitAnotherModel(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                fit(digits, [MLflowCallback(log_model=False)], epochs=1)

    outer = MLflowCallback(log_model=False)
    fit(digits, [outer, FitAnotherModel()], epochs=2)
    run = only_run(tracking_uri)
    assert run.info.run_id == outer.run_id and run.info.status == "FINISHED"
    assert "was still open" not in caplog.text


def test_a_resumed_run_that_never_improves_logs_its_earlier_best_as_the_model(tracking_uri, digits):
    # The run's first part fails after 3 epochs (the runner ends it FAILED: a checkpoint, no model/).
    # Its continuation joins the same run, as resume= does, and trains from fresh weights at a zero
    # learning rate, so no epoch beats the earlier best.
    first = MLflowCallback()
    with pytest.raises(RuntimeError), mlflow.start_run() as run:
        try:
            fit(digits, [first, RaiseAtEpoch(3)], epochs=6)
        except RuntimeError:
            first.end("FAILED")
            raise
    client = mlflow.MlflowClient(tracking_uri)
    assert "model" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    (x, y), (x_val, y_val) = digits
    with mlflow.start_run(run_id=run.info.run_id):
        tiny_model(learning_rate=0.0).fit(
            x,
            y,
            validation_data=(x_val, y_val),
            initial_epoch=3,
            epochs=5,
            batch_size=64,
            callbacks=[MLflowCallback()],
            verbose=0,
        )
    run = client.get_run(run.info.run_id)
    val_loss = history(tracking_uri, run.info.run_id, "val_loss")
    assert [step for step, _ in val_loss] == [0, 1, 2, 3, 4]
    best_step, best_value = min(val_loss, key=lambda point: point[1])
    assert best_step <= 2 and run.data.metrics["best_epoch"] == best_step
    assert run.info.status == "FINISHED"
    changes = artifact_csv(tracking_uri, run.info.run_id, "lr_changes.csv")
    assert changes.to_dict("records") == [
        {"epoch": 3, "old_learning_rate": pytest.approx(1e-3), "new_learning_rate": 0.0, "cause": "new fit"}
    ]
    logged = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    assert logged.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"] == pytest.approx(best_value, rel=1e-4)


STANDALONE = textwrap.dedent("""
    import os, signal, time
    import keras, numpy as np
    from sklearn.datasets import load_digits
    from plugins import MLflowCallback

    class Explode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if EXPLODE_AT is not None and epoch == EXPLODE_AT:
                if INTERRUPT:  # as Ctrl-C does
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # Python raises KeyboardInterrupt here, once the signal is in
                raise RuntimeError("boom")

    # Ctrl-C raises KeyboardInterrupt, as in a terminal: a background job (CI's) starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    x, y = load_digits(return_X_y=True)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 16, y, validation_split=0.2, epochs=4, verbose=0,
              callbacks=[MLflowCallback(log_model=False), Explode()])
""")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("explode_at", "interrupt", "status", "stop_reason", "reason", "epochs"),
    [
        (None, False, "FINISHED", "completed", None, 4),
        (1, False, "FAILED", "error", "RuntimeError: boom", 2),
        (1, True, "KILLED", "interrupted", "KeyboardInterrupt", 2),
    ],
)
def test_plain_keras_script(tmp_path, tracking_uri, explode_at, interrupt, status, stop_reason, reason, epochs):
    script = tmp_path / "train_script.py"
    script.write_text(f"EXPLODE_AT = {explode_at}\nINTERRUPT = {interrupt}\n" + STANDALONE)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (done.returncode == 0) == (explode_at is None), done.stderr[-2000:]
    run = only_run(tracking_uri)
    assert run.info.status == status
    assert run.data.tags["stop_reason"] == stop_reason
    assert run.data.tags.get("failure.reason") == reason  # the error that ended the script
    assert len(history(tracking_uri, run.info.run_id, "val_loss")) == epochs
    artifacts = {a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.keras"}


NOTEBOOK_CELLS = [
    textwrap.dedent("""
        import json, os, signal, time
        import keras, mlflow
        from sklearn.datasets import load_digits
        from plugins import MLflowCallback

        class Explode(keras.callbacks.Callback):
            def __init__(self, interrupt):
                super().__init__()
                self.interrupt = interrupt
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1 and self.interrupt:  # the kernel's Interrupt sends SIGINT
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)
                if epoch == 1:
                    raise RuntimeError("boom")

        x, y = load_digits(return_X_y=True)
        def fit(*callbacks):
            model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
            model.compile("adam", "sparse_categorical_crossentropy")
            model.fit(x / 16, y, validation_split=0.2, epochs=3, verbose=0, callbacks=[MLflowCallback(), *callbacks])
        def statuses():
            runs = mlflow.search_runs(output_format="list", order_by=["start_time"])
            return [(r.info.status, r.data.tags.get("stop_reason"), r.data.tags.get("failure.reason")) for r in runs]
        cell_hooks = len(get_ipython().events.callbacks["post_run_cell"])
    """),
    "fit(Explode(interrupt=True))",
    "print('after the interrupted cell', json.dumps(statuses()))",
    "fit(Explode(interrupt=False))",
    "print('after the failed cell', json.dumps(statuses()))",
    "fit()",
    "print('after the last cell', json.dumps([statuses(), mlflow.active_run() is None,"
    " len(get_ipython().events.callbacks['post_run_cell']) == cell_hooks]))",
]


@pytest.mark.slow
def test_in_a_notebook_a_fit_that_raised_ends_its_run_when_its_cell_ends(tmp_path, tracking_uri):
    """IPython's own shell runs the cells, as a Jupyter kernel does: a fit interrupted (the kernel's
    Interrupt) ends KILLED and one that raised FAILED, each as its cell ends, with what they logged."""
    driver = tmp_path / "notebook.py"
    driver.write_text(
        textwrap.dedent("""
        import json, signal, sys
        from IPython.core.interactiveshell import InteractiveShell
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel has it (see STANDALONE)
        shell = InteractiveShell.instance()
        for cell in json.load(open(sys.argv[1])):
            shell.run_cell(cell)
    """)
    )
    (tmp_path / "cells.json").write_text(json.dumps(NOTEBOOK_CELLS))
    done = subprocess.run(
        [sys.executable, str(driver), str(tmp_path / "cells.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "IPYTHONDIR": str(tmp_path / "ipython")},
    )
    printed = dict(line.split(" [", 1) for line in done.stdout.splitlines() if line.startswith("after the "))
    assert set(printed) == {"after the interrupted cell", "after the failed cell", "after the last cell"}, done.stdout
    killed = ["KILLED", "interrupted", "KeyboardInterrupt"]
    failed = ["FAILED", "error", "RuntimeError: boom"]
    # Each ended as its cell ended, not at the next fit, which got a run of its own.
    assert json.loads("[" + printed["after the interrupted cell"]) == [killed]
    assert json.loads("[" + printed["after the failed cell"]) == [killed, failed]
    runs, no_active_run, no_hook_left = json.loads("[" + printed["after the last cell"])
    assert runs == [killed, failed, ["FINISHED", "completed", None]]
    assert no_active_run and no_hook_left
    client = mlflow.MlflowClient(tracking_uri)
    interrupted = min(all_runs(tracking_uri), key=lambda run: run.info.start_time)
    assert interrupted.info.status == "KILLED"
    assert len(history(tracking_uri, interrupted.info.run_id, "val_loss")) == 2
    assert {"checkpoints", "history.csv", "learning_curves.png"} <= {
        a.path for a in client.list_artifacts(interrupted.info.run_id)
    }


def test_unreachable_tracking_server_does_not_stop_training(digits, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # nothing listens on the discard port
    try:
        tracker = MLflowCallback(log_model=False)
        model = fit(digits, [tracker], epochs=3)
    finally:
        mlflow.set_tracking_uri(None)
    assert len(model.history.history["loss"]) == 3


def break_at_epoch(monkeypatch, epoch: int) -> None:
    """A bug of the callback's own, at one epoch's end (a fit's first is 0): a fault injected into its
    real per-epoch part."""
    of_epoch, ends = EpochMetrics.of_epoch, []

    def broken(epoch_metrics, *args):
        ends.append(epoch)
        if len(ends) == epoch + 1:
            raise KeyError("a bug")
        return of_epoch(epoch_metrics, *args)

    monkeypatch.setattr(EpochMetrics, "of_epoch", broken)


@pytest.mark.parametrize("own_run", [True, False], ids=["run-it-started", "run-of-its-owner"])
def test_an_error_of_the_callback_itself_never_stops_training(tracking_uri, digits, caplog, own_run, monkeypatch):
    break_at_epoch(monkeypatch, 1)
    tracker = MLflowCallback(log_model=False)
    with contextlib.nullcontext() if own_run else mlflow.start_run() as outer:
        model = fit(digits, [tracker], epochs=4)
        assert mlflow.active_run() is None if own_run else mlflow.active_run().info.run_id == outer.info.run_id
    assert len(model.history.history["loss"]) == 4  # every epoch trained
    errors = [record for record in caplog.records if record.getMessage().startswith("MLflowCallback failed")]
    assert len(errors) == 1 and errors[0].exc_info is not None  # logged once, with the traceback
    caplog.clear()  # expected here: tests/conftest.py fails any other test whose callback swallowed an error
    run = only_run(tracking_uri)
    assert run.data.tags["tracking.error"] == "MLflowCallback failed in on_epoch_end: KeyError: 'a bug'"
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0]  # what came before it
    if own_run:  # ended by the callback; a run of its owner is the owner's to end (here: FINISHED on leaving it)
        assert run.info.status == "FAILED" and run.data.tags["failure.reason"] == run.data.tags["tracking.error"]


def test_batch_metrics_gathered_before_an_error_of_the_callback_itself_still_land(
    tracking_uri, digits, caplog, monkeypatch
):
    break_at_epoch(monkeypatch, 1)
    fit(digits, [MLflowCallback(log_model=False, log_every_n_steps=5)], epochs=2)
    caplog.clear()  # the error is expected: tests/conftest.py fails any other test whose callback swallowed one
    run = only_run(tracking_uri)
    assert run.info.status == "FAILED"
    # 19 batches per epoch: steps 20-35 were gathered in epoch 1, whose on_epoch_end broke before sending them.
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "batch_loss")] == [5, 10, 15, 20, 25, 30, 35]


def test_an_error_of_the_callback_in_end_called_by_its_owner_is_logged_not_raised(
    tracking_uri, digits, caplog, monkeypatch
):
    def broken(*args):
        raise KeyError("a bug at the end")

    monkeypatch.setattr(Publisher, "send_history", broken)
    tracker = MLflowCallback(log_model=False)
    with mlflow.start_run() as run:
        with pytest.raises(RuntimeError, match="injected fault at epoch 2"):
            fit(digits, [tracker, RaiseAtEpoch(2)], epochs=4)
        tracker.end("FAILED")  # the runner's way after fit raised: its own error, not the callback's, goes on
        tracker.finish_run("FAILED", tags={"failure.reason": "RuntimeError: injected fault at epoch 2"})
    errors = [record for record in caplog.records if record.getMessage().startswith("MLflowCallback failed")]
    assert len(errors) == 1 and errors[0].exc_info is not None
    caplog.clear()  # expected here: tests/conftest.py fails any other test whose callback swallowed an error
    logged = mlflow.MlflowClient(tracking_uri).get_run(run.info.run_id)
    assert logged.info.status == "FAILED"
    assert logged.data.tags["tracking.error"] == "MLflowCallback failed in end: KeyError: 'a bug at the end'"
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0, 1]
    assert logged.data.metrics["best_epoch"] in (0, 1)  # the summary, sent before the bug, still landed


class ArtifactWatch(keras.callbacks.Callback):
    """Records, at the end of each epoch, whether the run's checkpoint has been uploaded (waiting up to 30 s)."""

    def __init__(self, tracking_uri, tracker, wait_s):
        super().__init__()
        self.client, self.tracker, self.wait_s, self.seen = mlflow.MlflowClient(tracking_uri), tracker, wait_s, []

    def on_epoch_end(self, epoch, logs=None):
        deadline = time.monotonic() + self.wait_s
        while True:
            uploaded = bool(self.client.list_artifacts(self.tracker.run_id, "checkpoints"))
            if uploaded or time.monotonic() >= deadline:
                self.seen.append(uploaded)
                return
            time.sleep(0.05)


@pytest.mark.parametrize(("interval_s", "during_training"), [(0.0, True), (None, False)])  # None: the default
def test_checkpoint_interval_decides_whether_the_checkpoint_is_written_during_training(
    tracking_uri, digits, interval_s, during_training
):
    tracker = MLflowCallback(log_model=False, checkpoint_interval_s=interval_s)
    watch = ArtifactWatch(tracking_uri, tracker, wait_s=30 if during_training else 1)
    fit(digits, [tracker, watch], epochs=2)
    assert watch.seen == [during_training] * 2
    run = only_run(tracking_uri)
    assert [a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/best.keras"
    ]  # the final best always lands


def test_a_layer_class_keras_cannot_load_by_name_still_gets_checkpoints_during_training(tracking_uri, digits, caplog):
    class Doubled(keras.layers.Layer):  # defined in a function: a save names it, a load cannot find it
        def call(self, inputs):
            return inputs * 2.0

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), Doubled(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    caplog.set_level(logging.INFO, logger="plugins.checkpoint")
    tracker = MLflowCallback(checkpoint_interval_s=0)
    watch = ArtifactWatch(tracking_uri, tracker, wait_s=30)
    fit(digits, [tracker, watch], epochs=2, model=model)
    assert watch.seen == [True, True]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    cloned = [record.getMessage() for record in caplog.records if record.name == "plugins.checkpoint"]
    assert len(cloned) == 1 and "the model is cloned for background writes" in cloned[0]  # no save of it loads
    run = only_run(tracking_uri)
    path = mlflow.MlflowClient(tracking_uri).download_artifacts(run.info.run_id, "checkpoints/best.keras")
    checkpoint = keras.models.load_model(path, custom_objects={"Doubled": Doubled})
    loss = checkpoint.evaluate(*digits[1], verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(run.data.metrics["best_val_loss"], rel=1e-5)


def test_a_model_no_copy_can_be_made_of_gets_its_final_checkpoint_and_says_so(tracking_uri, digits, caplog):
    class NoCopies(keras.layers.Layer):  # neither loaded by name nor rebuilt from its config (as a Python
        def call(self, inputs):  # function inside TextVectorization's standardize)
            return inputs * 2.0

        @classmethod
        def from_config(cls, config):
            raise ValueError("holds a Python function that cannot be rebuilt")

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), NoCopies(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    caplog.set_level(logging.INFO, logger="plugins")
    fit(digits, [MLflowCallback(log_model=False, checkpoint_interval_s=0)], epochs=3, model=model)
    warned = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("checkpoints/best.keras: no copy of this model can be saved")
    assert warned[0].endswith("only the final checkpoint will land")
    run = only_run(tracking_uri)
    listed = mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id, "checkpoints")
    assert [a.path for a in listed] == ["checkpoints/best.keras"]


class GAN(keras.Model):
    """keras-io's GAN pattern: its own compile(d_optimizer, g_optimizer) and train_step; the model
    itself is never built and its own (default) optimizer never steps."""

    def __init__(self, discriminator, generator):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        self.d_loss = keras.metrics.Mean(name="d_loss")
        self.g_loss = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_loss, self.g_loss]

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real):
        import tensorflow as tf

        batch = tf.shape(real)[0]
        fake = self.generator(tf.random.normal((batch, 4)))
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], 0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(tf.concat([fake, real], 0)))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(
                tf.zeros((batch, 1)), self.discriminator(self.generator(tf.random.normal((batch, 4))))
            )
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
        self.d_loss.update_state(d_loss)
        self.g_loss.update_state(g_loss)
        return {"d_loss": self.d_loss.result(), "g_loss": self.g_loss.result()}


def test_a_gan_with_its_own_optimizers_gets_their_rates_and_what_is_known_of_it(tracking_uri, caplog):
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense
    discriminator = keras.Sequential([keras.Input((8,)), dense(16, activation="relu"), dense(1)])
    generator = keras.Sequential([keras.Input((4,)), dense(16, activation="relu"), dense(8)])
    gan = GAN(discriminator, generator)
    gan.compile(keras.optimizers.Adam(3e-4), keras.optimizers.Adam(1e-4))
    real = np.random.default_rng(0).random((128, 8)).astype("float32")
    gan.fit(real, epochs=2, batch_size=32, verbose=0, callbacks=[MLflowCallback(monitor="d_loss")])
    run = only_run(tracking_uri)
    assert "learning_rate" not in run.data.metrics  # the default optimizer super().compile() made never stepped
    assert [rate for _, rate in history(tracking_uri, run.info.run_id, "d_optimizer.learning_rate")] == pytest.approx(
        [3e-4, 3e-4]
    )
    assert run.data.metrics["g_optimizer.learning_rate"] == pytest.approx(1e-4)
    import tensorflow as tf

    backend = {
        "keras.version": keras.__version__,
        "keras.backend": "tensorflow",
        "keras.backend_version": tf.__version__,
    }
    assert run.data.params == {"fit.epochs": "2", "fit.steps_per_epoch": "4", **backend}
    summary = mlflow.MlflowClient(tracking_uri).download_artifacts(run.info.run_id, "model_summary.txt")
    assert open(summary).read() == "<not built>"
    # Keras cannot save it: the reason is its whole first sentence, not the first line of it.
    assert "must override `get_config()` in order to be serializable" in caplog.text


class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule as users write them, without get_config: Keras can train with it but not save it."""

    def __call__(self, step):
        return 1e-3 * keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / 10.0)


@pytest.mark.parametrize("checkpoint_interval_s", [0.0, 3600.0], ids=["during-training", "at-the-end"])
def test_a_model_keras_cannot_save_is_tracked_without_its_files(tracking_uri, digits, caplog, checkpoint_interval_s):
    model = tiny_model()
    model.compile(keras.optimizers.Adam(WarmUp()), "sparse_categorical_crossentropy", metrics=["accuracy"])
    tracker = MLflowCallback(checkpoint_interval_s=checkpoint_interval_s, flush_timeout_s=0)
    fit(digits, [tracker], epochs=3, model=model)
    run = only_run(tracking_uri)
    assert run.info.status == "FINISHED" and "tracking.error" not in run.data.tags
    assert run.data.params["optimizer.learning_rate"] == "WarmUp" and run.data.params["optimizer.class"] == "Adam"
    assert [step for step, _ in history(tracking_uri, run.info.run_id, "val_loss")] == [0, 1, 2]
    artifacts = {a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id)}
    assert artifacts == {
        "history.csv",
        "learning_curves.png",
        "lr_changes.csv",
        "model_summary.txt",
    }  # nothing half-written
    assert tracker.unsent_folder is None  # not kept for a later sync: writing it again would fail again
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    # No copy to write from during training (it is made on the training thread, and cannot be): one
    # warning then, and at the end the checkpoint is tried on its own too, since model/ can fail where Keras would not.
    warned = "checkpoints/best.keras: no copy of this model can be saved during training" in caplog.text
    assert warned == (checkpoint_interval_s == 0)
    failed = ["writing model/", "writing checkpoints/best.keras"]
    assert len(errors) == len(failed)
    for what, error in zip(failed, errors):  # one line each, at the end, with Keras' reason
        assert f"{what} failed (NotImplementedError: Learning rate schedule 'WarmUp' must override" in error


def test_a_save_on_a_new_thread_reuses_what_an_earlier_save_learnt_and_writes_the_same_model(
    tmp_path, digits, monkeypatch
):
    model = fit(digits, [], epochs=1)
    built = []  # reference optimizers Keras builds to learn which attributes a save skips
    real_init = keras.optimizers.Optimizer.__init__

    def counted_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(keras.optimizers.Optimizer, "__init__", counted_init)

    def save_on_a_new_thread(path):
        def save():
            with keras_saving.known_skipsets():
                model.save(path)

        thread = threading.Thread(target=save)
        thread.start()
        thread.join()
        return path

    first = save_on_a_new_thread(tmp_path / "first.keras")
    built.clear()
    second = save_on_a_new_thread(tmp_path / "second.keras")
    assert built == []
    first, second = keras.saving.load_model(first), keras.saving.load_model(second)
    assert second.get_config() == first.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(second.get_weights(), first.get_weights()))
    saved_states = [[v.numpy() for v in each.optimizer.variables] for each in (model, first, second)]
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(*saved_states))
    assert len(saved_states[2]) == len(model.optimizer.variables) > 2  # the optimizer's state is saved too


class _ClusterModel:
    """What MLflowCallback reads of a model under a multi-worker tf.distribute strategy: the cluster resolver."""

    def __init__(self, cluster: dict, task_type: str, task_id: int):
        import tensorflow as tf

        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )
        self.distribute_strategy = type("Strategy", (), {"cluster_resolver": resolver})()


@pytest.mark.parametrize(
    ("cluster", "task_type", "task_id", "chief"),
    [
        ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "chief", 0, True),
        ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "worker", 0, False),
        ({"worker": ["b:1", "c:1"]}, "worker", 0, True),  # no chief: worker 0 is the chief
        ({"worker": ["b:1", "c:1"]}, "worker", 1, False),
    ],
)
def test_only_the_chief_of_a_multi_worker_strategy_logs(tracking_uri, cluster, task_type, task_id, chief):
    model = _ClusterModel(cluster, task_type, task_id)
    assert is_chief(model) == chief
    tracker = MLflowCallback(log_model=False)
    tracker.set_model(model)
    if not chief:  # every hook is a no-op: no run, nothing touched
        tracker.on_train_begin()
        tracker.on_epoch_begin(0)
        tracker.on_train_batch_begin(0)
        tracker.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
        tracker.on_train_end()
        assert all_runs(tracking_uri) == [] and tracker.run_id is None


def test_the_old_name_register_model_name_still_registers_with_a_warning(tracking_uri, digits):
    with pytest.warns(FutureWarning, match="renamed registered_model_name"):
        tracker = MLflowCallback(register_model_name="digits-old-name", log_model=True)
    assert tracker.settings.registered_model_name == "digits-old-name"
