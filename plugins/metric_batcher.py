"""Metric points gathered and sent together: one log_batch per interval, not one per epoch or step."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from mlflow.entities import Metric, RunTag
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH

from plugins import metric_names


class MetricBatcher:
    """Keeps points until ``interval_s`` has passed since the last send, then sends them all in one
    call, each with its own step: each log_batch is a store transaction (or an HTTP request) whose
    CPU time and GIL hold the training loop feels, so short epochs share a call.

    Args:
        send_batch: ``send_batch(what, points, tags)`` queues one log_batch; ``what`` names it.
        interval_s: least time between two sends; 0 sends at every ``send_if_due``.
        clock: seconds, monotonic (a fake one in tests).
    """

    def __init__(
        self,
        send_batch: Callable[[str, list[Metric], list[RunTag]], object],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._send_batch = send_batch
        self._interval_s = interval_s
        self._clock = clock
        self._points: list[Metric] = []
        self._sent_at = clock()

    def gather(self, points: list[Metric], room: int = 0) -> None:
        """Keep ``points`` for the next send, sending the kept ones first if all would not fit in one
        call with ``room`` more entities."""
        if len(self._points) + len(points) + room > MAX_ENTITIES_PER_BATCH:
            self.send()
        self._points.extend(points)

    def send_if_due(self) -> None:
        if self._clock() - self._sent_at >= self._interval_s:
            self.send()

    def send(self, tags: Mapping[str, str] | None = None) -> None:
        """The points gathered so far, and ``tags``, in one call."""
        points, self._points = self._points, []
        self._sent_at = self._clock()
        if points or tags:
            run_tags = [RunTag(key, value) for key, value in (tags or {}).items()]
            self._send_batch(describe(points, tags), points, run_tags)


def as_points(metrics: Mapping[str, float | None], step: int) -> list[Metric]:
    timestamp = int(time.time() * 1000)
    return [Metric(key, value, timestamp, step) for key, value in metrics.items() if value is not None]


def describe(points: list[Metric], tags: Mapping[str, str] | None) -> str:
    """What one log_batch holds, as warnings and the list of what was not sent name it."""
    epochs = sorted({point.step for point in points if not metric_names.is_summary(point.key)})
    steps = sorted({point.step for point in points if metric_names.is_batch(point.key)})
    parts = []
    if epochs:
        parts.append(
            f"metrics of epoch {epochs[0]}" if len(epochs) == 1 else f"metrics of epochs {epochs[0]}-{epochs[-1]}"
        )
    if steps:
        parts.append(f"metrics of steps {steps[0]}-{steps[-1]}")
    if tags:
        parts.append("summary metrics and tags")
    return ", ".join(parts) or "metrics"
