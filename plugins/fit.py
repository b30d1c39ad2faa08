"""One fit's tracking: every per-fit part and its state, made at on_train_begin."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import keras
import mlflow
from mlflow.entities import Metric
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from plugins import curves, metric_names, optimizers
from plugins import tags as tag_names
from plugins.best_epoch import BestEpoch, holds_weights
from plugins.checkpoint import BestCheckpoint
from plugins.continuation import LoggedEpochs, StepOffsets
from plugins.delivery import Delivery
from plugins.diagnostics import Diagnostics
from plugins.epoch_metrics import EpochMetrics, numbers
from plugins.errors import describe
from plugins.interrupt import signals_held
from plugins.learning_rate import LearningRateWatcher, changes_in_history
from plugins.metric_batcher import MetricBatcher, as_points
from plugins.publisher import Publisher, model_source, stop_reason, summary_metrics
from plugins.run_binding import RunBinding
from plugins.settings import TrackingSettings

log = logging.getLogger(__name__)

UNFINISHED_REASON = "fit never reached its end: it raised or was interrupted"
ModelNow = Callable[[], keras.Model]  # the model being fit, synced where the backend needs it (see Fit)


class Fit:
    """The tracking of one ``fit`` into one run: the parts, and what the fit has logged so far.

    Args:
        settings: what the callback was asked to do.
        model_now: the model, as the callback's ``model`` gives it: on JAX that syncs the training state
            into its variables (stale mid-epoch). Read only when something is logged: the batch path stays cheap.
        binding: the run this fit logs into.
        keras_params: Keras' params of the fit (``epochs``, ``steps``, ``verbose``).
    """

    def __init__(self, settings: TrackingSettings, model_now: ModelNow, binding: RunBinding, keras_params: Mapping):
        self.settings, self.binding, self._model_now = settings, binding, model_now
        self.run_id, self.keras_params = binding.run_id, dict(keras_params or {})
        self.local_dir = settings.output_dir or Path(tempfile.mkdtemp(prefix=f"mlflow-{self.run_id[:8]}-"))
        self.delivery = Delivery(self.run_id, settings.spool_base)
        logged = self._logged_epochs()
        self.logged_params, self.history = logged.params, list(logged.history)
        self.offsets = StepOffsets(logged)
        self._optimizer_step = lambda: optimizers.training_steps(model_now())
        self.rate = watch_rate(model_now, logged)
        diagnostics = Diagnostics(model_now, settings.diagnostics_data) if settings.diagnostics else None
        self.epoch_metrics = EpochMetrics(self.run_id, diagnostics)
        self.best = BestEpoch(settings.monitor, settings.mode, self._higher_is_better)
        self.best.add_logged(logged.history)
        self.batcher = MetricBatcher(self._send_batch, settings.metrics_interval_s)
        checkpoint = BestCheckpoint(model_now, self.local_dir / "checkpoints" / "best.keras")
        self.publisher = Publisher(self.delivery, binding.client, self.run_id, self.local_dir, checkpoint, settings)
        self.active = True
        self.epoch = 0  # the run's number of the current epoch
        self.last_epoch: int | None = None
        self.epoch_logs: dict = {}
        self.epoch_started = 0.0
        self.fit_steps = 0  # training steps of this fit so far, as the batch hooks report them
        self.epoch_first_step = 0  # fit_steps when the current epoch began
        self.stop_reason: str | None = None
        self.server_unreachable = False  # at the end of training, the last attempt got no answer

    @property
    def model(self) -> keras.Model:
        return self._model_now()

    # ----------------------------------------------------------------- the fit's moments

    def begin(self) -> None:
        curves.HELPER.start()  # ready by the end of training
        self._send_model_facts()

    def epoch_begins(self, epoch: int) -> None:
        if not self.offsets.started:
            missing = self.offsets.first_epoch(epoch, self._optimizer_step)
            if missing:
                self._note_missing_epochs(missing)
        self.epoch = self.offsets.run_epoch(epoch)
        self.epoch_first_step = self.fit_steps
        self.epoch_started = time.perf_counter()
        self.rate.epoch_begins(self.epoch)

    def epoch_ends(self, epoch: int, logs: dict) -> None:
        epoch = self.offsets.run_epoch(epoch)
        self.rate.epoch_ends(logs)
        self.epoch_logs = logs
        self._send_model_facts()
        seconds = time.perf_counter() - self.epoch_started
        metrics = self.epoch_metrics.of_epoch(logs, self.model, self.rate.in_force, seconds)
        self.history.append({"epoch": epoch, **metrics})
        self.last_epoch = epoch
        self.delivery.retry_if_unsent()
        self.batcher.gather(as_points(metrics, step=epoch))
        self.batcher.send_if_due()
        if self.best.update(epoch, logs):
            self.publisher.checkpoint.offer_from(self.model)
        self.publisher.checkpoint_if_due()

    def batch_ends(self, batch: int, logs: dict | None, every_n_steps: int) -> None:
        # With steps_per_execution > 1, Keras calls this once per execution, with the epoch's index
        # of its last step: points are due whenever the steps pass a multiple of every_n_steps.
        steps_before, self.fit_steps = self.fit_steps, self.epoch_first_step + batch + 1
        if not self.active or steps_before // every_n_steps == self.fit_steps // every_n_steps:
            return
        step = self._optimizer_step() + self.offsets.batch_offset
        timestamp = int(time.time() * 1000)
        batch_metrics = numbers(logs or {})
        self.batcher.gather(
            [
                Metric(f"{metric_names.BATCH_PREFIX}{key}", value, timestamp, step)
                for key, value in batch_metrics.items()
            ]
        )
        self.batcher.send_if_due()

    def end(self, status: str) -> tuple[list[str], KeyboardInterrupt | None]:
        """Send everything still pending; (what was never sent, an interrupt that came meanwhile).

        A signal while the run's files are written waits for them (a second Ctrl-C right after the
        first must not leave them half-made), then skips the wait for the server; one during that
        wait cuts it short. Either way what was not sent is kept on disk."""
        interrupt = None
        try:
            with signals_held():
                self._publish(status)
        except KeyboardInterrupt as error:
            interrupt = error
        timeout_s = 0 if interrupt else self.settings.flush_timeout_s
        unsent, cut_short = self.delivery.flush_with_retries(timeout_s)
        self.server_unreachable = self.delivery.unreachable
        self.delivery.close(keep_unsent=bool(unsent))
        if self.settings.output_dir is None:
            shutil.rmtree(self.local_dir, ignore_errors=True)
        return unsent, interrupt or cut_short

    def _publish(self, status: str) -> None:
        """The run's last metrics, its model, history and plot, handed to the sender."""
        self.active = False
        self._send_model_facts(final=True)  # a model first built by an epoch that never ended, or never built
        self.best.rank_logged()  # no epoch of this fit ended
        # First: it reads the model's weights, which the final save may swap. The points still
        # gathered (of short epochs, or of an epoch that never ended) go with it.
        self._send_summary(status)
        if self.best.epoch is None and self.history and self.settings.monitor not in self.epoch_logs:
            self.best.warn_missing(self.epoch_logs)  # no epoch was validated
        source = model_source(
            status,
            self.settings.log_model,
            self.publisher.checkpoint.has_best,
            self.best.epoch is not None,
            self.best.warned_missing,
        )
        step = model_step(self.best.epoch, self.last_epoch)
        self.publisher.send_model(source, self.model, self.settings.monitor, step)
        title = run_title(self.run_id, self.settings.run.run_name)
        self.publisher.send_history(self.history, self.rate.changes, title, self.best.epoch)

    def tag_failure(self, error: BaseException | None) -> None:
        reason = UNFINISHED_REASON if error is None else describe(error)[:MAX_TAG_VAL_LENGTH]
        call = partial(self.binding.client.set_tag, self.run_id, tag_names.FAILURE_REASON, reason)
        self.delivery.submit("failure.reason tag", call)

    def stop(self) -> None:
        """After an error of the callback's own: send what was gathered, stop the sender."""
        self.active = False
        self.rate.stop()
        self.batcher.send()
        self.delivery.sender.close()

    # ----------------------------------------------------------------- helpers

    def _logged_epochs(self) -> LoggedEpochs:
        """What a reopened run logged before this fit (nothing for a run made just now)."""
        fresh, self.binding.fresh = self.binding.fresh, False  # a second fit into it reads this one's back
        if fresh:
            return LoggedEpochs()
        return LoggedEpochs.read(self.binding.client, self.run_id, bool(self.settings.log_every_n_steps))

    def _send_model_facts(self, final: bool = False) -> None:
        self.publisher.send_model_facts(self.model, self.keras_params, self.settings.params, self.logged_params, final)

    def _send_batch(self, what: str, points: list, tags: list) -> None:
        call = partial(self.binding.client.log_batch, self.run_id, metrics=points, tags=tags)
        self.delivery.submit(what, call)

    def _send_summary(self, status: str) -> None:
        metrics = summary_metrics(
            self.history, len(self.rate.changes), self.best.epoch, self.best.value, self.settings.monitor
        )
        fit_epochs = None if self.last_epoch is None else self.offsets.fit_epochs(self.last_epoch)
        last_loss = self.history[-1].get("loss") if self.history else None
        self.stop_reason = stop_reason(
            status,
            bool(getattr(self.model, "stop_training", False)),
            last_loss,
            fit_epochs,
            self.keras_params.get("epochs"),
        )
        tags = {tag_names.STOP_REASON: self.stop_reason}
        if self.stop_reason == "early_stopping":
            metrics["stopped_epoch"] = self.last_epoch
            tags[tag_names.RESTORED_BEST_WEIGHTS] = str(
                holds_weights(self.model, self.publisher.checkpoint.best_weights())
            ).lower()
        self.batcher.gather(as_points(metrics, step=0), room=len(tags))
        self.batcher.send(tags)

    def _note_missing_epochs(self, epochs: list[int]) -> None:
        """Training goes on past epochs the run has no metrics for: a resume from a backup taken after
        epochs whose metrics were still on their way when the process was killed, or a fit whose
        initial_epoch skips some. Say so, in the log and the run."""
        missing = ",".join(map(str, epochs))
        log.warning(
            "MLflow run %s has no metrics of epochs %s (lost on their way when the process was killed, "
            "or skipped by initial_epoch); training goes on from epoch %d",
            self.run_id,
            missing,
            epochs[-1] + 1,
        )
        call = partial(self.binding.client.set_tag, self.run_id, tag_names.MISSING_EPOCHS, missing)
        self.delivery.submit("missing_epochs tag", call)

    def _higher_is_better(self) -> bool:
        return metric_names.higher_is_better(self.settings.monitor, getattr(self.model, "metrics", []))


def watch_rate(model_now: ModelNow, logged: LoggedEpochs) -> LearningRateWatcher:
    """The learning rate's watcher, from the last logged epoch's rate and changes of a reopened run."""
    last_rate = logged.history[-1].get("learning_rate") if logged.history else None
    return LearningRateWatcher(
        lambda: optimizers.current_rate(model_now()),
        lambda: optimizers.has_schedule(model_now()),
        last_rate,
        changes_in_history(logged.history),
    )


def run_title(run_id: str, given_name: str | None) -> str:
    """The run's name as the UI shows it (MLflow's made-up one for a run it named)."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id and active.info.run_name:
        return active.info.run_name
    return given_name or f"run {run_id}"


def model_step(best_epoch: int | None, last_epoch: int | None) -> int:
    """The step model/ is logged at: the best epoch's, else (no best epoch: the last epoch's model) the last's."""
    return best_epoch if best_epoch is not None else (last_epoch or 0)
