"""checkpoints/best.keras: the best epoch's model, written off the training thread, and read back."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from plugins import artifacts, keras_saving, logged_model
from plugins.errors import first_line
from plugins.sender import Deferred, Unneeded

log = logging.getLogger(__name__)


class BestCheckpoint:
    """checkpoints/best.keras: the best epoch's model, written off the training thread.

    ``offer_from`` keeps the model's weights as the newest best: copied on the device into variables
    made at the first offer and written in place after it, so an improvement costs a copy in memory,
    not a fresh host array per variable (a tenth of a second and more for a large model).
    ``save_pending`` (while training goes on) writes the newest one offered from a copy of the model,
    so however fast improvements come, the last one always lands and none is written twice. The
    copy is made by ``prepare_copy`` on the training thread, between steps: on JAX the model's
    variables hold its state only there. After training, ``final_model`` saves without a copy.

    Args:
        model_now: the model being fit, as the callback's ``model`` gives it (synced on JAX).
        path: where the checkpoint is written.
    """

    def __init__(self, model_now: Callable[[], keras.Model], path: Path):
        self.path = path
        self._model_now = model_now
        self._lock = threading.Lock()  # the kept weights change on the training thread, are read on the sender's
        self._kept: list[keras.Variable] | None = None  # the best epoch's weights, on the device
        self._pending = False  # offered, not yet taken
        self._copy: keras.Model | None = None
        # Taken, not yet in self.path: kept until a write succeeds (a failed model/ write leaves
        # them for the checkpoint's own write).
        self._unwritten: list[np.ndarray] | None = None
        self.no_copy = False  # the model cannot be copied (a custom Python function inside): final save only
        self.in_model = False  # model/ holds the newest best: no checkpoint file of it

    @property
    def pending(self) -> bool:
        return self._pending

    @property
    def has_best(self) -> bool:
        return self._kept is not None

    def offer_from(self, model: keras.Model) -> None:
        """The model's weights now are the best epoch's."""
        with self._lock:
            values = [_snapshot(variable) for variable in model.weights]
            if self._kept is None:
                self._kept = [keras.Variable(value, dtype=value.dtype, trainable=False) for value in values]
            else:
                for kept, value in zip(self._kept, values):
                    kept.assign(value)
            self._pending = True

    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's weights as host arrays (a copy); None before any was offered."""
        with self._lock:
            return self._host_copy()

    def _host_copy(self) -> list[np.ndarray] | None:
        return None if self._kept is None else [keras.ops.convert_to_numpy(kept.value) for kept in self._kept]

    def prepare_copy(self) -> None:
        """Make the copy background writes save from, once (on the training thread, between steps).
        Where none can be made, only the final save writes the checkpoint."""
        if self._copy is not None or self.no_copy:
            return
        try:
            self._copy = _copy_for_saving(self._model_now())
        except Exception as error:
            self.no_copy = True
            log.warning(
                "checkpoints/best.keras: no copy of this model can be saved during training (%s); "
                "only the final checkpoint will land",
                first_line(error),
            )

    def save_pending(self) -> None:
        """Write the newest offered weights from the copy (on the sender's thread, during training).
        Where no copy of the model was made, nothing is written now: the final save writes it."""
        if self._copy is None:
            raise Deferred("no copy of the model can be saved during training: the final save writes it")
        weights = self._take_pending()
        if weights is not None:
            self._copy.set_weights(weights)
            with keras_saving.known_skipsets():
                artifacts.write_atomically(self.path, self._copy.save)
            self._unwritten = None

    def save_final(self) -> None:
        """After training: write the newest offered weights, if they are not written yet, and not
        in model/ either: then the checkpoint would be a second copy of the same file."""
        with self.final_model() as model:
            if self._unwritten is None and self.in_model:
                raise Unneeded("model/ holds the best model")
            if self._unwritten is not None:
                with keras_saving.known_skipsets():
                    artifacts.write_atomically(self.path, model.save)
                self._unwritten = None

    @contextmanager
    def final_model(self) -> Iterator[keras.Model | None]:
        """After training, while nothing else uses the model: a model holding the newest offered
        weights. The copy if one was made; else the trained model itself, the best weights put in
        for the time of the save and its own put back (cheaper than making a copy)."""
        weights = self._take_pending()
        if weights is None or self._copy is not None:
            if weights is not None:
                self._copy.set_weights(weights)
            yield self._copy
            return
        model = self._model_now()
        own = model.get_weights()
        # Often the model holds them already: the best epoch was the last, or EarlyStopping restored it.
        swap = not all(np.array_equal(mine, best) for mine, best in zip(own, weights))
        if swap:
            model.set_weights(weights)
        try:
            yield model
        finally:
            if swap:
                model.set_weights(own)

    def held_by_model(self) -> None:
        """final_model() was just saved as model/, which becomes the run's model: that file is the best
        checkpoint, not stored twice (a resume reads it there, see load_logged_checkpoint)."""
        self._unwritten, self.in_model = None, True

    def _take_pending(self) -> list[np.ndarray] | None:
        """The newest offered weights that are not in self.path yet, if any."""
        with self._lock:
            if self._pending:
                self._unwritten, self._pending = self._host_copy(), False
        return self._unwritten


def _snapshot(variable: keras.Variable):
    """The variable's value now, in memory of its own on the device.

    On TensorFlow, convert_to_tensor reads the value (a variable's .value is the variable itself, and
    a Variable made from it would follow the model's). On JAX and PyTorch the value is the buffer
    training goes on with: JAX frees it at the next step (donated), PyTorch writes into it.
    """
    if keras.backend.backend() == "tensorflow":
        return keras.ops.convert_to_tensor(variable)
    return keras.ops.copy(variable.value)


CHECKPOINT = "checkpoints/best.keras"
MODEL_FILE = "data/model.keras"  # in the run's logged model, or in its own model/ (a run has one of them)


def load_logged_checkpoint(client: mlflow.MlflowClient, run_id: str) -> keras.Model:
    """A run's best model, downloaded and loaded with Keras' safe mode: its checkpoints/best.keras,
    else the Keras file of its model (its logged model, or its own model/)."""
    with tempfile.TemporaryDirectory() as folder:
        return keras.models.load_model(_download_best(client, run_id, folder), safe_mode=True)


def _download_best(client: mlflow.MlflowClient, run_id: str, folder: str) -> str:
    if _has(client, run_id, CHECKPOINT):
        return client.download_artifacts(run_id, CHECKPOINT, folder)
    model = logged_model.of_run(client, run_id)
    if model is None:  # its model/ (the last path tried: a run with neither names this file as missing)
        return client.download_artifacts(run_id, f"model/{MODEL_FILE}", folder)
    # Through the client's store: MLflow's own runs:/ and models:/ look a model up in the global one.
    repository = get_artifact_repository(model.artifact_location, tracking_uri=client.tracking_uri)
    return repository.download_artifacts(MODEL_FILE, folder)


def _has(client: mlflow.MlflowClient, run_id: str, path: str) -> bool:
    return any(found.path == path for found in client.list_artifacts(run_id, path.rsplit("/", 1)[0]))


def _copy_for_saving(model: keras.Model) -> keras.Model:
    """Same layers, state and compile settings, own weights and a fresh optimizer: it can be saved
    while the original trains."""
    try:
        copy = _loaded_from_a_save(model)
    except Exception as error:
        # A class Keras cannot find by its name (one defined inside a function) loads no model. The
        # clone holds config and weights: all the state of most models.
        log.info(
            "checkpoints/best.keras: the model is cloned for background writes, not loaded from a save (%s)",
            first_line(error),
        )
        copy = keras.models.clone_model(model)
    copy.compile_from_config(model.get_compile_config())
    return copy


def _loaded_from_a_save(model: keras.Model) -> keras.Model:
    """``model`` saved and loaded back, without its optimizer.

    Not keras.models.clone_model: it rebuilds layers from their config and takes no state that Keras
    saves beside the weights, such as an adapted TextVectorization's vocabulary. A model saved from
    such a clone cannot be loaded.
    """
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "model.keras"
        with keras_saving.known_skipsets():
            model.save(saved)
        # Not safe mode: the file was written just now, from the model in training (Lambda layers included).
        return keras.models.load_model(saved, compile=False, safe_mode=False)
