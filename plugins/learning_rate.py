"""The learning rate in force during each epoch, and what changed it."""

from __future__ import annotations

from collections.abc import Callable

from plugins.artifacts import LearningRateChange


class LearningRateWatcher:
    """Reads the optimizer's rate at the first batch of each epoch, which runs after every callback's
    ``on_epoch_begin`` (schedulers) and every ``on_epoch_end`` of the epoch before (plateaus), wherever
    they sit in the callback list; and tells the cause of a change from when in the epoch cycle it
    happened: ``schedule`` (the optimizer's own LearningRateSchedule), ``plateau``, ``scheduler``,
    ``new fit`` (a fit into a run with logged epochs that starts at another rate).

    Args:
        read_rate: the optimizer's current rate.
        has_schedule: whether the optimizer's rate is a LearningRateSchedule (asked at each change).
        in_force: the rate of the run's last logged epoch, for a fit that carries a run on.
        changes: the changes read back from the run's logged epochs.
    """

    def __init__(
        self,
        read_rate: Callable[[], float],
        has_schedule: Callable[[], bool],
        in_force: float | None = None,
        changes: list[LearningRateChange] | None = None,
    ):
        self._read_rate = read_rate
        self._has_schedule = has_schedule
        self.in_force = in_force
        self.changes: list[LearningRateChange] = list(changes or [])
        self._epoch = 0
        self._unread = False
        self._at_epoch_begin: float | None = None
        self._at_epoch_end: float | None = None  # None until this fit's first epoch ends
        self._epoch_logs: dict = {}
        self._logged_before_us = False

    def epoch_begins(self, epoch: int) -> None:
        """``epoch``: the run's number of the epoch (with any offset of a continued run)."""
        self._epoch = epoch
        self._at_epoch_begin = self._read_rate()
        self._unread = True

    def batch_begins(self) -> None:
        if self._unread:
            self._unread = False
            self._note(self._read_rate())

    def epoch_ends(self, logs: dict) -> None:
        """What the rate and the logs looked like when the tracking callback's on_epoch_end ran."""
        self.batch_begins()  # an epoch without batches
        self._at_epoch_end = self._read_rate()
        self._epoch_logs = logs
        self._logged_before_us = "learning_rate" in logs

    def stop(self) -> None:
        self._unread = False

    def _note(self, rate: float) -> None:
        if self.in_force is not None and rate != self.in_force:
            self.changes.append(LearningRateChange(self._epoch, self.in_force, rate, self._cause()))
        self.in_force = rate

    def _cause(self) -> str:
        if self._has_schedule():
            return "schedule"
        if self._at_epoch_end is None:
            return "new fit"  # a fit into a run with logged epochs (a resume, a second stage) starts at another rate
        if self._at_epoch_end != self.in_force:
            return "plateau"  # changed in on_epoch_end, by a callback before this one
        if self._at_epoch_begin != self._at_epoch_end:
            # Between this callback's on_epoch_end and its next on_epoch_begin: a plateau callback
            # after it, or a scheduler before it. ReduceLROnPlateau (and LearningRateScheduler)
            # add `learning_rate` to the epoch's logs, so a key that appeared after us is a plateau.
            appeared_after_us = not self._logged_before_us and "learning_rate" in self._epoch_logs
            return "plateau" if appeared_after_us else "scheduler"
        return "scheduler"  # changed in on_epoch_begin, by a callback after this one


def changes_in_history(rows: list[dict]) -> list[LearningRateChange]:
    """The rate changes between a run's logged epochs (cause ``earlier fit``)."""
    return [
        LearningRateChange(after["epoch"], before.get("learning_rate"), after.get("learning_rate"), "earlier fit")
        for before, after in zip(rows, rows[1:])
        if before.get("learning_rate") != after.get("learning_rate")
    ]
