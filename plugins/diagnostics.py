"""Per-epoch diagnostics of generalisation, measured fairly.

Keras' ``loss`` is the mean over the epoch's training batches, with dropout, augmentation and batch
normalisation in their training mode, while ``val_loss`` is measured after the epoch without them:
``val_loss - loss`` shrinks under dropout by construction. ``train_eval_loss`` is measured as
``val_loss`` is, on a fixed sample of the training data at the end of each epoch, so
``gap_loss_eval`` (``val_loss - train_eval_loss``) compares like with like. ``penalty_loss`` is the
L1/L2 penalty inside both losses; ``weight_norm`` the global L2 norm of the trainable kernels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from plugins import metric_names
from plugins.curves import accuracy_key
from plugins.errors import describe

log = logging.getLogger(__name__)
CHUNK = 1024  # examples a step: a larger sample is evaluated in pieces, so its size does not set the memory


class Diagnostics:
    """The diagnostics of one fit's epochs.

    Args:
        model_now: the model being fitted, as the callback's ``model`` gives it (synced on JAX).
        sample: ``(x, y)`` from the training data, evaluated each epoch; None: only ``penalty_loss``
            and ``weight_norm``.
    """

    def __init__(self, model_now: Callable[[], keras.Model], sample: tuple[Any, Any] | None):
        self._model_now = model_now
        self.sample = sample

    @property
    def model(self) -> keras.Model:
        return self._model_now()

    def epoch_metrics(self, logs: Mapping[str, float]) -> dict[str, float]:
        """This epoch's diagnostics, given the epoch's metrics (for the gaps)."""
        found = {"penalty_loss": penalty(self.model), "weight_norm": kernel_norm(self.model)}
        if self.sample is not None:
            evaluated = self._evaluate_sample()
            found.update({f"train_eval_{key}": value for key, value in evaluated.items()})
        return found | gaps(logs, found)

    def _evaluate_sample(self) -> dict[str, float]:
        """The compiled loss and metrics on the sample in inference mode, a chunk a step, averaged
        over the chunks by their sizes (exact for a loss and for mean metrics such as accuracy); none
        (once warned) where the model cannot be evaluated (a custom test_step, no compiled loss).
        Keras' test_on_batch, not evaluate: evaluate costs about 50 ms a call in set-up alone."""
        x, y = self.sample
        totals: dict[str, float] = {}
        try:
            for start in range(0, len(y), CHUNK):
                results = self.model.test_on_batch(x[start : start + CHUNK], y[start : start + CHUNK], return_dict=True)
                size = len(y[start : start + CHUNK])
                for key, value in results.items():
                    if np.ndim(value) == 0:
                        totals[key] = totals.get(key, 0.0) + float(value) * size
        except Exception as error:  # Keras raises what the model's own test_step raises
            log.warning("train_eval_* not logged: the model cannot evaluate its training sample (%s)", describe(error))
            self.sample = None
            return {}
        return {key: total / len(y) for key, total in totals.items()}


def keras_gaps(logs: Mapping[str, float]) -> dict[str, float]:
    """``gap_loss`` (val_loss - loss) and ``gap_accuracy`` from Keras' own figures: the training
    side measured in training mode, through the epoch."""
    result = {}
    if "loss" in logs and "val_loss" in logs:
        result["gap_loss"] = logs["val_loss"] - logs["loss"]
    accuracy = accuracy_key(logs)  # a model compiled with metrics=["acc"] logs acc
    if accuracy and metric_names.validation_twin(accuracy) in logs:
        result["gap_accuracy"] = logs[accuracy] - logs[metric_names.validation_twin(accuracy)]
    return result


def gaps(logs: Mapping[str, float], found: Mapping[str, float]) -> dict[str, float]:
    """``gap_loss_eval`` and ``gap_accuracy_eval`` where both sides were measured."""
    result = {}
    if "val_loss" in logs and "train_eval_loss" in found:
        result["gap_loss_eval"] = logs["val_loss"] - found["train_eval_loss"]
    accuracy = accuracy_key(logs)
    if accuracy and f"train_eval_{accuracy}" in found and metric_names.validation_twin(accuracy) in logs:
        result["gap_accuracy_eval"] = found[f"train_eval_{accuracy}"] - logs[metric_names.validation_twin(accuracy)]
    return result


def penalty(model: keras.Model) -> float:
    """The sum of the model's added losses (its kernel regularisers' L1/L2 penalties); 0 without."""
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses))


def kernel_norm(model: keras.Model) -> float:
    """The global L2 norm of the trainable kernels (not biases, not batch norm's scale and shift)."""
    squares = sum(
        float(np.sum(np.square(keras.ops.convert_to_numpy(weight), dtype=np.float64)))
        for weight in model.trainable_weights
        if weight.name.endswith("kernel")
    )
    return math.sqrt(squares)
