"""MetricBatcher with a fake clock: how many log_batch calls, and what each holds."""

from __future__ import annotations

from mlflow.entities import Metric
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH

from plugins.metric_batcher import MetricBatcher, as_points, describe


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batcher(interval_s: float):
    clock, calls = Clock(), []
    sent = MetricBatcher(lambda what, points, tags: calls.append((what, points, tags)), interval_s, clock)
    return sent, clock, calls


def test_epochs_shorter_than_the_interval_share_one_call_each_point_with_its_step():
    metrics, clock, calls = batcher(1.0)
    for epoch in range(5):
        clock.now += 0.3  # a 0.3 s epoch
        metrics.gather(as_points({"loss": 1.0 / (epoch + 1), "val_loss": 2.0}, step=epoch))
        metrics.send_if_due()
    metrics.send()
    assert [what for what, _, _ in calls] == ["metrics of epochs 0-3", "metrics of epoch 4"]
    assert [point.step for point in calls[0][1] if point.key == "loss"] == [0, 1, 2, 3]


def test_interval_zero_sends_every_epoch_at_its_end():
    metrics, clock, calls = batcher(0.0)
    for epoch in range(3):
        metrics.gather(as_points({"loss": 1.0}, step=epoch))
        metrics.send_if_due()
    assert [what for what, _, _ in calls] == ["metrics of epoch 0", "metrics of epoch 1", "metrics of epoch 2"]


def test_points_that_would_not_fit_in_one_call_are_sent_first():
    metrics, clock, calls = batcher(60.0)
    metrics.gather([Metric("batch_loss", 1.0, 0, step) for step in range(MAX_ENTITIES_PER_BATCH - 1)])
    metrics.gather([Metric("loss", 1.0, 0, 0), Metric("val_loss", 1.0, 0, 0)])
    assert len(calls) == 1 and len(calls[0][1]) == MAX_ENTITIES_PER_BATCH - 1
    metrics.gather(as_points({"best_epoch": 0}, step=0), room=MAX_ENTITIES_PER_BATCH)  # room for the summary's tags
    assert len(calls) == 2


def test_the_summary_goes_with_its_tags_and_nothing_is_sent_when_nothing_waits():
    metrics, clock, calls = batcher(1.0)
    metrics.send()
    assert calls == []
    metrics.gather(as_points({"best_epoch": 3, "lr_changes": 1, "skipped": None}, step=0))
    metrics.send({"stop_reason": "completed"})
    ((what, points, tags),) = calls
    assert what == "summary metrics and tags"
    assert {point.key for point in points} == {"best_epoch", "lr_changes"}
    assert [(tag.key, tag.value) for tag in tags] == [("stop_reason", "completed")]


def test_a_call_is_named_by_its_epochs_and_steps():
    points = [Metric("loss", 1.0, 0, 4), Metric("batch_loss", 1.0, 0, 40), Metric("batch_loss", 1.0, 0, 60)]
    assert describe(points, None) == "metrics of epoch 4, metrics of steps 40-60"
    assert describe([], None) == "metrics"
