"""LearningRateWatcher driven with synthetic rates and logs, as Keras calls the hooks in one epoch cycle."""

from __future__ import annotations

from plugins.artifacts import LearningRateChange
from plugins.learning_rate import LearningRateWatcher, changes_in_history


class Optimizer:
    """The rate a watcher reads; callbacks change it between the hooks."""

    def __init__(self, rate: float, schedule: bool = False):
        self.rate, self.schedule = rate, schedule


def watcher(optimizer: Optimizer, **kwargs) -> LearningRateWatcher:
    return LearningRateWatcher(lambda: optimizer.rate, lambda: optimizer.schedule, **kwargs)


def epoch(rates: LearningRateWatcher, number: int, logs: dict | None = None, batches: int = 2) -> None:
    rates.epoch_begins(number)
    for _ in range(batches):
        rates.batch_begins()
    rates.epoch_ends(logs or {"loss": 1.0})


def test_a_constant_rate_is_in_force_every_epoch_and_never_changes():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    for number in range(3):
        epoch(rates, number)
        assert rates.in_force == 0.01
    assert rates.changes == []


def test_a_plateau_callback_before_the_tracker_is_told_apart_from_a_scheduler():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    epoch(rates, 0)
    # ReduceLROnPlateau before the tracker: the rate changes inside on_epoch_end, before ours reads it.
    rates.epoch_begins(1)
    rates.batch_begins()
    optimizer.rate = 0.005
    rates.epoch_ends({"loss": 1.0, "learning_rate": 0.005})
    epoch(rates, 2)
    assert rates.changes == [LearningRateChange(2, 0.01, 0.005, "plateau")]
    assert rates.in_force == 0.005


def test_a_plateau_callback_after_the_tracker_adds_the_rate_to_the_logs_after_it():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    logs = {"loss": 1.0}
    rates.epoch_begins(0)
    rates.batch_begins()
    rates.epoch_ends(logs)
    optimizer.rate, logs["learning_rate"] = 0.001, 0.001  # ReduceLROnPlateau runs after us, on the same logs
    epoch(rates, 1)
    assert rates.changes == [LearningRateChange(1, 0.01, 0.001, "plateau")]


def test_a_scheduler_before_the_tracker_changes_the_rate_between_epochs():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    epoch(rates, 0)
    optimizer.rate = 0.02  # LearningRateScheduler's on_epoch_begin, before ours
    epoch(rates, 1)
    assert rates.changes == [LearningRateChange(1, 0.01, 0.02, "scheduler")]


def test_a_scheduler_after_the_tracker_is_read_at_the_first_batch():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    epoch(rates, 0)
    rates.epoch_begins(1)
    optimizer.rate = 0.02  # its on_epoch_begin runs after ours: the first batch still sees it
    rates.batch_begins()
    rates.epoch_ends({"loss": 1.0})
    assert rates.changes == [LearningRateChange(1, 0.01, 0.02, "scheduler")]
    assert rates.in_force == 0.02


def test_an_optimizer_schedule_changes_are_the_schedule_s():
    optimizer = Optimizer(0.01, schedule=True)
    rates = watcher(optimizer)
    epoch(rates, 0)
    optimizer.rate = 0.009
    epoch(rates, 1)
    assert [change.cause for change in rates.changes] == ["schedule"]


def test_a_fit_that_carries_a_run_on_at_another_rate_is_a_new_fit():
    optimizer = Optimizer(0.001)
    rates = watcher(optimizer, in_force=0.01, changes=[LearningRateChange(2, 0.02, 0.01, "earlier fit")])
    epoch(rates, 5)
    assert rates.changes[-1] == LearningRateChange(5, 0.01, 0.001, "new fit")
    assert len(rates.changes) == 2


def test_an_epoch_without_batches_still_reads_its_rate():
    optimizer = Optimizer(0.01)
    rates = watcher(optimizer)
    epoch(rates, 0, batches=0)
    assert rates.in_force == 0.01


def test_changes_between_logged_epochs_are_an_earlier_fit_s():
    rows = [
        {"epoch": 0, "learning_rate": 0.01},
        {"epoch": 1, "learning_rate": 0.01},
        {"epoch": 2, "learning_rate": 0.005},
    ]
    assert changes_in_history(rows) == [LearningRateChange(2, 0.01, 0.005, "earlier fit")]
    assert changes_in_history([]) == []
