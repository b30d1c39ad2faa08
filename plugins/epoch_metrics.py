"""One epoch's metrics, assembled from Keras' logs and the model: what on_epoch_end hands to the batcher."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from plugins import optimizers
from plugins.diagnostics import Diagnostics, keras_gaps
from plugins.params import sanitize_name

log = logging.getLogger(__name__)


class EpochMetrics:
    """Keras' numbers (one per class for a per-class metric), the learning rate in force, the epoch's
    time, the Keras gaps and, when asked, the diagnostics. A log value that cannot be a metric is
    named in one warning a fit."""

    def __init__(self, run_id: str, diagnostics: Diagnostics | None = None):
        self.run_id = run_id
        self.diagnostics = diagnostics
        self.warned_not_numbers: set[str] = set()

    def of_epoch(self, logs: Mapping[str, Any], model, rate_in_force: float | None, seconds: float) -> dict:
        self._warn_not_numbers(logs)
        metrics = {key: value for key, value in numbers(logs).items() if key != "learning_rate"}
        # Our own reading replaces the one Keras' LR callbacks put in the logs: theirs depends on order.
        # A model that steps optimizers of its own (a GAN's d_optimizer, g_optimizer) gets one per optimizer.
        own = optimizers.own_optimizer_steps(model)
        metrics.update({"learning_rate": rate_in_force} if own else optimizers.stepping_rates(model))
        metrics["epoch_time_s"] = seconds
        metrics.update(keras_gaps(metrics))
        if self.diagnostics is not None:
            metrics.update(self.diagnostics.epoch_metrics(metrics))
        return metrics

    def _warn_not_numbers(self, logs: Mapping[str, Any]) -> None:
        for key, value in logs.items():
            if key in self.warned_not_numbers or numbers({key: value}):
                continue
            self.warned_not_numbers.add(key)
            what = f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            log.warning(
                "MLflow run %s: %r is not logged: MLflow metrics are numbers, and its value is %s",
                self.run_id,
                key,
                what,
            )


def numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    """Keras logs as metric names and numbers. A metric with one value per class (F1Score with
    average=None) gives one metric per class, <name>_<class>; any other value is left out."""
    found = {}
    for key, value in logs.items():
        if isinstance(value, (int, float, np.number)):
            found[sanitize_name(key)] = float(value)
        elif isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.number):
            found.update({sanitize_name(f"{key}_{index}"): float(item) for index, item in enumerate(value)})
    return found
