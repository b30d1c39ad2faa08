"""The best epoch of a fit (and of the run's earlier epochs) by the monitored metric."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


class BestEpoch:
    """The epoch whose ``monitor`` value is best, as Keras' MonitorCallback decides it: ``mode`` min,
    max, or auto (the direction the metric declares, asked each time: Keras makes the compiled metric
    objects at the first batch). A missing monitor warns once with the keys that exist.

    Args:
        monitor: the metric, e.g. ``val_loss``.
        mode: ``min``, ``max`` or ``auto``.
        higher_is_better: for mode auto, whether the monitor is better higher.
    """

    def __init__(self, monitor: str, mode: str, higher_is_better: Callable[[], bool]):
        self.monitor = monitor
        self.mode = mode
        self._higher_is_better = higher_is_better
        self.epoch: int | None = None
        self.value: float | None = None
        self.warned_missing = False
        self._unranked: list[dict] = []  # read back from the run, best not yet picked among them

    def add_logged(self, rows: list[dict]) -> None:
        """Epochs the run logged before this fit; ranked at the next ``update`` or ``rank_logged``."""
        self._unranked = list(rows)

    def rank_logged(self) -> None:
        rows, self._unranked = self._unranked, []
        for row in rows:
            value = row.get(self.monitor)
            if value is not None and math.isfinite(value) and self.improves(value):
                self.value, self.epoch = value, row["epoch"]

    def update(self, epoch: int, logs: dict) -> bool:
        """Whether ``epoch``, with these logs, is the new best."""
        self.rank_logged()
        value = logs.get(self.monitor)
        if value is None:
            # An epoch without validation (validation_freq > 1, or no validation data) may lack it;
            # a validated epoch that lacks it means a misnamed monitor. The end tells of the first kind.
            validated = any(key.startswith("val_") for key in logs) or not self.monitor.startswith("val_")
            if validated:
                self.warn_missing(logs)
            return False
        if not math.isfinite(value) or not self.improves(value):
            return False
        self.value, self.epoch = float(value), epoch
        return True

    def improves(self, value: float) -> bool:
        if self.value is None:
            return True
        maximise = self.mode == "max" or (self.mode == "auto" and self._higher_is_better())
        return value > self.value if maximise else value < self.value

    def warn_missing(self, logs: dict) -> None:
        if not self.warned_missing:
            self.warned_missing = True
            log.warning("MLflowCallback monitors %r, which is not in the logs: %s", self.monitor, ", ".join(logs))


def holds_weights(model, weights: list[np.ndarray] | None) -> bool:
    """Whether ``model`` ends fit with ``weights``, the best epoch's (EarlyStopping restored them)."""
    return weights is not None and all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
