"""The runner's fit and test in-process (experiments.training.fit_and_test), on a tiny model and data."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from experiments import training
from plugins import MLflowCallback
from tests.conftest import all_runs


def batches(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def toy(examples: int) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A seeded two-class softmax on 8 features, the class the sign of the first, compiled."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, x, y


def test_the_end_tags_say_whether_early_stopping_restored_the_best_weights(tracking_uri):
    # EarlyStopping and the tracker share monitor and mode (the runner's conf has them so). With
    # mode max on a falling val_loss, epoch 0 is the best for both and EarlyStopping stops after
    # epoch 1. It restores epoch 0's weights in its own on_train_end, after the tracker's: the
    # tracker saw epoch 1's weights, the model ends with the best ones.
    model, x, y = toy(256)
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="max", patience=0, restore_best_weights=True)
    job = training.Job(
        model=model,
        callbacks=[stopper],
        train=batches(x[:192], y[:192]),
        val=batches(x[192:224], y[192:224]),
        test=batches(x[224:], y[224:]),
        test_labels=y[224:],
        steps_per_epoch=6,
        initial_epoch=0,
        class_weight=None,
    )
    tracker = MLflowCallback(monitor="val_loss", mode="max", log_model=False)
    cfg = OmegaConf.create({"trainer": {"epochs": 5, "verbose": 0}})
    tested = training.fit_and_test(job, cfg, tracker, keras.callbacks.Callback(), None)
    assert stopper.stopped_epoch == 1 and tracker.stop_reason == "early_stopping" and tracker.best_epoch == 0
    assert tested.tags == {"early_stopping.restored_best_weights": "true"}
    # What the tracker could see at its own end: the weights before EarlyStopping restored them.
    assert all_runs(tracking_uri)[0].data.tags["early_stopping.restored_best_weights"] == "false"
    assert tested.metrics["examples"] == 32
    assert tested.metrics["data_loss"] == tested.metrics["loss"]  # no L1/L2 penalty in this model


def test_the_logged_model_carries_its_run_s_name_as_a_tag_params_and_test_metrics_on_the_test_split(tracking_uri):
    import mlflow

    model, x, y = toy(96)
    tracker = MLflowCallback(
        run_name="cnn-l2 optimizer.learning_rate=0.01", params={"reg.name": "l2"}, registered_model_name="toy"
    )
    tracker.start_run()
    for context, (xs, ys) in (("validation", (x[64:80], y[64:80])), ("test", (x[80:], y[80:]))):
        mlflow.log_input(mlflow.data.from_numpy(xs, targets=ys, name=f"toy-{context}"), context=context)
    model.fit(x[:64], y[:64], validation_data=(x[64:80], y[64:80]), epochs=3, callbacks=[tracker], verbose=0)
    tracker.finish_run("FINISHED", metrics={"test_accuracy": 0.75, "test_loss": 0.5})
    (run,) = all_runs(tracking_uri)
    (logged,) = mlflow.search_logged_models(output_format="list")
    assert (logged.name, logged.tags["run_name"]) == ("model", "cnn-l2 optimizer.learning_rate=0.01")
    assert logged.params["reg.name"] == "l2"
    best = int(run.data.metrics["best_epoch"])
    linked = {metric.key: metric for metric in logged.metrics}
    test = linked["test_accuracy"]
    assert (test.value, test.step, test.dataset_name) == (0.75, best, "toy-test")
    assert linked["val_loss"].dataset_name == "toy-validation" and linked["val_loss"].step == best
    assert run.data.metrics["test_accuracy"] == 0.75 and run.info.status == "FINISHED"
    # The registered version says which run it is, and once tested, its test results.
    version = mlflow.MlflowClient().get_model_version("toy", "1")
    assert version.description == (
        f"Run cnn-l2 optimizer.learning_rate=0.01 ({run.info.run_id}), the best epoch's weights (step {best}). "
        "Test split: test_accuracy 0.7500, test_loss 0.5000."
    )
    assert version.tags == {
        "run_id": run.info.run_id,
        "run_name": "cnn-l2 optimizer.learning_rate=0.01",
        "best_step": str(best),
        "test_accuracy": "0.7500",
        "test_loss": "0.5000",
    }
