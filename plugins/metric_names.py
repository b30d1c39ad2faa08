"""Metric-name families and which way a metric is better: one place for the callback and compare."""

from __future__ import annotations

import re
from collections.abc import Iterable

BATCH_PREFIX = "batch_"
VALIDATION_PREFIX = "val_"
# Metrics logged once per run, at the end; every other metric has one point per epoch.
_SUMMARY = re.compile(r"^(lr_changes|epochs_run|stopped_epoch|best_.*|.*_at_best|test_.*|batch_.*)$")
# Names of metrics that are better higher, where a metric object declares no direction.
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1")
MODES = ("auto", "min", "max")  # which way the monitored metric is better: as it declares, down, up


def is_summary(name: str) -> bool:
    """A metric with one value per run (best_*, test_*, ...) or per batch step: not an epoch's."""
    return bool(_SUMMARY.match(name))


def is_batch(name: str) -> bool:
    return name.startswith(BATCH_PREFIX)


def is_validation(name: str) -> bool:
    return name.startswith(VALIDATION_PREFIX)


def validation_twin(name: str) -> str:
    """``accuracy`` -> ``val_accuracy``: the same metric measured on the validation data."""
    return f"{VALIDATION_PREFIX}{name}"


def higher_is_better(name: str, metrics: Iterable = ()) -> bool:
    """Whether ``name`` (``val_`` or not) is better higher, as Keras' own callbacks tell in mode auto:
    by the direction its metric object among ``metrics`` (a model's ``metrics``) declares; by its
    name where none declares one (accuracy, AUC, precision, recall, F1 up; losses and errors down)."""
    base = name.removeprefix(VALIDATION_PREFIX).removeprefix("best_").removeprefix("test_").removeprefix("d_")
    for metric in metrics:
        for inner in getattr(metric, "metrics", None) or [metric]:  # compiled metrics come in a container
            direction = getattr(inner, "_direction", None)
            if getattr(inner, "name", None) == base and direction in ("up", "down"):
                return direction == "up"
    return any(sign in name for sign in _HIGHER_IS_BETTER)
