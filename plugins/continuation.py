"""Continuing a logged run: what it already holds, and where this fit's epochs and steps go."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow

from plugins import metric_names
from plugins.errors import first_line

log = logging.getLogger(__name__)


@dataclass
class LoggedEpochs:
    """What a run holds when a fit joins it (a resumed run, a second fit): nothing for a new run."""

    history: list[dict] = field(default_factory=list)  # one row per logged epoch: {"epoch": step, metric: value}
    params: dict[str, str] = field(default_factory=dict)
    last_batch_step: int | None = None  # the highest step of its batch-level metrics

    @classmethod
    def read(cls, client: mlflow.MlflowClient, run_id: str, with_batch_steps: bool) -> LoggedEpochs:
        """The run's epochs, params and (``with_batch_steps``) last batch step; nothing when the
        server cannot be read: a fit starts afresh rather than not at all."""
        try:
            run = client.get_run(run_id)
            metrics = run.data.metrics
            rows: dict[int, dict] = {}
            for key in (key for key in metrics if not metric_names.is_summary(key)):
                for point in client.get_metric_history(run_id, key):
                    rows.setdefault(point.step, {"epoch": point.step})[key] = point.value
            batch_key = next((key for key in metrics if metric_names.is_batch(key)), None)
            last_batch_step = None
            if with_batch_steps and batch_key is not None:
                last_batch_step = max(point.step for point in client.get_metric_history(run_id, batch_key))
        except Exception as error:
            log.warning("could not read the run's earlier epochs (%s)", first_line(error))
            return cls()
        return cls([rows[step] for step in sorted(rows)], dict(run.data.params), last_batch_step)

    @property
    def next_epoch(self) -> int:
        return self.history[-1]["epoch"] + 1 if self.history else 0


class StepOffsets:
    """Where this fit's epochs and batch steps go in the run's numbering.

    A second fit into the same run (fine-tuning after training a head) restarts Keras' epochs at 0:
    its steps carry on after the run's logged ones. A resume (``initial_epoch``) starts past them and
    keeps Keras' numbers. A new optimizer (recompiled to fine-tune) counts its batch steps from 0
    again: they carry on after the run's; one that goes on (restored by a resume) keeps its own count.
    """

    def __init__(self, logged: LoggedEpochs):
        self._logged_epochs = logged.next_epoch
        self._logged_batch_step = logged.last_batch_step
        self.epoch_offset: int | None = None  # known at the fit's first epoch
        self.batch_offset = 0

    def first_epoch(self, epoch: int, optimizer_step: Callable[[], int]) -> list[int]:
        """Fix the offsets at the fit's first epoch (Keras' number); the run's epochs it skips."""
        self.epoch_offset = max(0, self._logged_epochs - epoch)
        if self._logged_batch_step is not None and optimizer_step() == 0:
            self.batch_offset = self._logged_batch_step
        return list(range(self._logged_epochs, epoch)) if self._logged_epochs and epoch > self._logged_epochs else []

    @property
    def started(self) -> bool:
        return self.epoch_offset is not None

    def run_epoch(self, epoch: int) -> int:
        """Keras' epoch number as the run's step."""
        return epoch + (self.epoch_offset or 0)

    def fit_epochs(self, run_epoch: int) -> int:
        """How many epochs this fit trained when its last was ``run_epoch``, counting from Keras' 0."""
        return run_epoch - (self.epoch_offset or 0) + 1
