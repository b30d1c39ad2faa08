"""MLflowCallback: record a Keras training run in MLflow at near-zero cost to training."""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from functools import partial, wraps
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric, RunTag
from mlflow.utils.autologging_utils import autologging_is_disabled
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_TAG_VAL_LENGTH

from plugins import artifacts, curves, keras_saving, model_facts, spool
from plugins.artifacts import LearningRateChange
from plugins.checkpoint import BestCheckpoint, load_logged_checkpoint
from plugins.params import batches, flatten, sanitize_name, to_params
from plugins.sender import Sender

log = logging.getLogger(__name__)

_MAX_SIGNS = ("acc", "auc", "precision", "recall", "f1")
# Local work on the sender's thread that the uploads of its files wait for.
_WRITING_CHECKPOINT = "writing checkpoints/best.keras"
_WRITING_MODEL = "writing model/"  # and checkpoints/best.keras from the same save, at the end
# Metrics this callback logs once per run, at the end; every other metric has one point per epoch.
_SUMMARY = re.compile(r"^(lr_changes|epochs_run|stopped_epoch|best_.*|.*_at_best|test_.*|batch_.*)$")
_UNFINISHED_REASON = "fit never reached its end: it raised or was interrupted"
# By run id: the runs MLflowCallbacks started for fits that have not ended (see _end_fit_left_open).
_UNFINISHED: dict[str, MLflowCallback] = {}


def _never_raises(hook):
    """A Keras hook of the callback, or end(): an error of the callback's own (a bug, not a tracking
    failure, which the sender handles) is logged once and ends tracking for this fit; training goes on."""

    @wraps(hook)
    def guarded(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except Exception as error:
            log.exception("MLflowCallback failed in %s; training goes on without tracking", hook.__name__)
            self._stop_tracking(f"MLflowCallback failed in {hook.__name__}: {type(error).__name__}: {error}")
            return None

    return guarded


class MLflowCallback(keras.callbacks.Callback):
    """Log params, per-epoch metrics, learning-rate changes, early-stopping facts and the best
    checkpoint of a Keras ``fit`` to MLflow.

    It logs into the active MLflow run. With none, it starts one at ``on_train_begin`` and ends it
    at ``on_train_end``; if ``fit`` raised, KILLED for an interrupt and FAILED otherwise, when the
    process exits, the IPython cell ends or the thread's next fit begins. Under ``mlflow run`` the
    run named by ``MLFLOW_RUN_ID`` is used and left for ``mlflow run`` to end. All sending happens on
    one background thread; a tracking failure warns once and never stops training.

    Args:
        monitor: metric that picks the best epoch, e.g. ``val_loss``.
        mode: ``min``, ``max`` or ``auto``: as Keras' callbacks, the direction the monitored metric
            declares (up for accuracy, AUC, R2Score, IoU, ...); for a metric that declares none, max
            for accuracy-like names and min otherwise.
        params: extra params to log, nested or flat (e.g. the whole Hydra config).
        log_every_n_steps: also log ``batch_<metric>`` every N optimizer steps; None: epochs only.
        metrics_interval_s: least time between two log_batch calls of metrics. Epochs (and logged
            steps) that end sooner wait and go in the next call, each point with its own step; 0:
            one call per epoch. Everything waiting is sent before the run ends.
        log_model: log the best model as an MLflow Model (Keras flavour) at ``model/``.
        registered_model_name: also register ``model/`` under this name.
        input_example: a few inputs stored with the MLflow Model.
        checkpoint_interval_s: least time between two background writes of checkpoints/best.keras,
            and from the start of training to the first (each costs CPU that training could use);
            the final best is always written.
        flush_timeout_s: at the end, how long to keep retrying what the tracking server did not take.
        output_dir: where local copies of the artifacts go; None: a temporary folder.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        params: Mapping[str, Any] | None = None,
        log_every_n_steps: int | None = None,
        log_model: bool = True,
        registered_model_name: str | None = None,
        input_example: np.ndarray | None = None,
        metrics_interval_s: float = 1.0,
        checkpoint_interval_s: float = 10.0,
        flush_timeout_s: float = 120.0,
        output_dir: str | Path | None = None,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode={mode!r}: expected 'auto', 'min' or 'max'")
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"params={params!r}: expected a mapping of names to values (a dict, a Hydra config)")
        if log_every_n_steps is not None and (not isinstance(log_every_n_steps, int) or log_every_n_steps < 1):
            raise ValueError(f"log_every_n_steps={log_every_n_steps!r}: expected None or a whole number >= 1")
        for name, seconds in (
            ("metrics_interval_s", metrics_interval_s),
            ("checkpoint_interval_s", checkpoint_interval_s),
            ("flush_timeout_s", flush_timeout_s),
        ):
            # Compared with clocks inside hooks that never raise: a bad one would end tracking mid-fit.
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
                raise ValueError(f"{name}={seconds!r}: expected a number of seconds >= 0")
        self.monitor = monitor
        self.mode = mode
        self.extra_params = flatten(params or {})
        self.log_every_n_steps = log_every_n_steps
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.input_example = input_example
        self.metrics_interval_s = metrics_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.output_dir = _made_folder(Path(output_dir)) if output_dir else None
        if log_every_n_steps:
            # Bound per instance, not defined on the class: Keras dispatches batch-end hooks
            # asynchronously only while no callback overrides them, and epoch-only logging keeps that.
            self.on_train_batch_end = self._log_batch_metrics
        self.run_id: str | None = None
        self.stop_reason: str | None = None
        self.unsent_folder: Path | None = None  # where what the server never took was kept
        self._active = False
        self._sender: Sender | None = None
        self._server_unreachable = False  # at the end of training, the last attempt got no answer

    # ----------------------------------------------------------------- Keras hooks

    @_never_raises
    def on_train_begin(self, logs=None):
        self._end_fit_left_open()  # first: it may be this callback's own last fit, whose state goes next
        self._reset_state()
        if not self._is_chief() or not self._join_or_start_run():
            return
        self._active = True
        _warn_if_autologging()
        self._sender = Sender()
        self._checkpoint = BestCheckpoint(self.model, self._local_dir / "checkpoints" / "best.keras")
        if not self._owns_run:  # a run this callback just started has nothing to read back
            self._continue_logged_epochs()
        curves.HELPER.start()  # ready by the end of training
        self._send_model_facts_once()

    @_never_raises
    def on_epoch_begin(self, epoch, logs=None):
        if not self._active:
            return
        if self._step_offset is None:
            # A second fit into the same run (fine-tuning after training a head) restarts Keras'
            # epochs at 0: its steps carry on after the run's logged ones. A resume starts past them.
            logged = self._history[-1]["epoch"] + 1 if self._history else 0
            self._step_offset = max(0, logged - epoch)
            if self._history and epoch > logged:
                self._note_missing_epochs(list(range(logged, epoch)))
            if self._logged_batch_step is not None and self._optimizer_step() == 0:
                # A new optimizer (recompiled to fine-tune) counts from 0 again: its batch steps carry on
                # the run's. One that goes on (a resume restored or set it) keeps its own count.
                self._batch_step_offset = self._logged_batch_step
        self._epoch = epoch + self._step_offset
        self._epoch_first_step = self._fit_steps
        self._epoch_started = time.perf_counter()
        self._lr_at_epoch_begin = self._read_learning_rate()
        self._lr_unread = True

    @_never_raises
    def on_train_batch_begin(self, batch, logs=None):
        # The first step of an epoch runs after every on_epoch_begin (schedulers) and every
        # previous on_epoch_end (plateaus), wherever they sit in the callback list.
        if self._lr_unread:
            self._lr_unread = False
            self._note_learning_rate(self._read_learning_rate())

    @_never_raises
    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        epoch += self._step_offset or 0
        logs = logs or {}
        if self._lr_unread:  # an epoch without batches
            self._lr_unread = False
            self._note_learning_rate(self._read_learning_rate())
        self._send_model_facts_once()
        self._remember_epoch_end(logs)
        metrics = self._epoch_metrics(logs)
        self._history.append({"epoch": epoch, **metrics})
        self._last_epoch = epoch
        if self._sender.has_unsent:
            self._sender.retry()
        self._gather(_as_points(metrics, step=epoch))
        self._send_points_if_due()
        self._track_best(epoch, logs)
        self._maybe_checkpoint()

    @_never_raises
    def on_train_end(self, logs=None):
        self.end("FINISHED")

    # ----------------------------------------------------------------- public

    @property
    def best_epoch(self) -> int | None:
        return self._best_epoch

    @property
    def best_value(self) -> float | None:
        return self._best_value

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """Weights at the best epoch (a copy), e.g. to evaluate the test split with them."""
        return self._best_weights

    @_never_raises
    def end(self, status: str = "FINISHED") -> None:
        """Send everything still pending; end the run with ``status`` if this callback started it.

        Called by ``on_train_end``; call it yourself with ``FAILED`` or ``KILLED`` when ``fit``
        raised, so the best checkpoint so far and the history still land.
        """
        if not self._active:
            return
        self._active = False
        self._unwatch_unfinished()
        self._send_model_facts_once()  # a model first built by an epoch that never ended
        self._rank_logged_epochs()  # no epoch of this fit ended
        # First: it reads the model's weights, which the final save may swap. The points still
        # gathered (of short epochs, or of an epoch that never ended) go with it.
        self._send_summary(status)
        if self._best_epoch is None and self._history and self.monitor not in self._epoch_logs:
            self._warn_missing_monitor(self._epoch_logs)  # no epoch was validated
        checkpoint_due = self._checkpoint.pending
        if status == "FINISHED" and self.log_model and self._best_weights is not None:
            self._send_best_model(checkpoint_due)
        elif status == "FINISHED" and self.log_model and self._best_epoch is not None:
            self._send_logged_best_model()
        elif status == "FINISHED" and self.log_model and self._warned_missing_monitor:
            self._send_last_model()  # no monitored metric to pick a best epoch by, e.g. no validation data
        elif checkpoint_due:
            self._send_checkpoint(self._checkpoint.save_final)
        self._send_history()
        unsent, interrupt = self._flush_with_retries()
        self._report_not_written()
        self._server_unreachable = self._sender.unreachable
        self._sender.close()
        if unsent:
            self._keep_unsent(self._sender.unsent_calls(), self.run_id)
        if self.output_dir is None:
            shutil.rmtree(self._local_dir, ignore_errors=True)
        if self._owns_run:
            self.finish_run(status)
        if interrupt is not None:
            raise interrupt  # it cut the wait short; what it was sent to stop still stops

    def finish_run(
        self,
        status: str = "FINISHED",
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log last metrics and tags (e.g. test results, a failure reason) and end the active run with
        ``status``. Never raises for the tracking server: what it does not take is kept with the
        run's other unsent calls for ``python -m experiments.sync``.
        """
        run = mlflow.active_run()
        if run is None:
            return
        client = mlflow.MlflowClient()
        unsent = []
        # The server gave no answer to the last attempt moments ago: one try each, not minutes of retries.
        with _no_http_retries() if self._server_unreachable else nullcontext():
            if metrics or tags:
                timestamp = int(time.time() * 1000)
                last = partial(
                    client.log_batch,
                    run.info.run_id,
                    metrics=[Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()],
                    tags=[RunTag(key, str(value)) for key, value in (tags or {}).items()],
                )
                if not _sent(last):
                    unsent.append(("last metrics and tags", last))
            try:
                mlflow.end_run(status)  # it takes the run off MLflow's stack first, so nothing ends it twice
            except Exception:
                unsent.append((f"ending the run {status}", partial(client.set_terminated, run.info.run_id, status)))
        if unsent:
            self._keep_unsent(unsent, run.info.run_id)

    def _report_not_written(self) -> None:
        for what, reason in self._sender.not_written.items():
            log.error("MLflow run %s: %s failed (%s), so its files are not in the run", self.run_id, what, reason)

    def _keep_unsent(self, calls: list, run_id: str) -> None:
        self.unsent_folder = spool.keep(calls, self._spool_folder(run_id))
        log.error(
            "MLflow run %s: the tracking server did not take %s; kept in %s, send with: python -m experiments.sync %s",
            run_id,
            ", ".join(what for what, _ in calls),
            self.unsent_folder,
            self.unsent_folder,
        )

    def _flush_with_retries(self) -> tuple[list[str], KeyboardInterrupt | None]:
        """Wait for everything queued; retry what failed until it is sent or flush_timeout_s passes.
        An interrupt (Ctrl-C) cuts the wait short: it is handed back, to be raised once what was not
        sent is kept on disk and the run is ended."""
        deadline = time.monotonic() + self.flush_timeout_s
        try:
            unsent = self._sender.flush()
            if unsent and self.flush_timeout_s > 0:
                log.warning(
                    "MLflow run %s: the tracking server has not taken %s; trying again for up to %g s "
                    "(flush_timeout_s). Ctrl-C stops waiting and keeps them on disk",
                    self.run_id,
                    ", ".join(unsent),
                    self.flush_timeout_s,
                )
            while unsent and time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                self._sender.retry()
                unsent = self._sender.flush()
            return unsent, None
        except KeyboardInterrupt as interrupt:
            log.warning(
                "MLflow run %s: stopped waiting for the tracking server (%s)", self.run_id, _describe_error(interrupt)
            )
            return self._sender.flush(), interrupt

    # ----------------------------------------------------------------- run

    def _reset_state(self) -> None:
        self._active = False
        self.run_id = None  # the run of this fit, once joined or started
        self._server_unreachable = False
        self._owns_run = False
        # Once training ended: completed, early_stopping, nan_loss, interrupted or error.
        self.stop_reason: str | None = None
        self._epoch = 0  # of the run: Keras' epoch + _step_offset
        self._step_offset: int | None = None  # known at the first epoch
        self._last_epoch: int | None = None
        self._history: list[dict] = []
        self._unranked_epochs: list[dict] = []  # read back from the run, best not yet picked among them
        self._lr_changes: list[LearningRateChange] = []
        self._lr_in_force: float | None = None
        self._lr_unread = False
        self._lr_at_epoch_begin: float | None = None
        self._lr_at_epoch_end: float | None = None  # None until this fit's first epoch ends
        self._epoch_logs: dict = {}
        self._lr_logged_before_us = False
        self._best_value: float | None = None
        self._best_epoch: int | None = None
        self._best_weights: list[np.ndarray] | None = None
        self._warned_missing_monitor = False
        self._warned_not_numbers: set[str] = set()  # log keys whose values are not metrics
        self._logged_params: dict[str, str] = {}
        self._model_facts_sent = False  # params and model summary
        self._fit_steps = 0  # training steps of this fit so far, as the batch hooks report them
        self._epoch_first_step = 0  # _fit_steps when the current epoch began
        self._logged_batch_step: int | None = None  # the run's last batch step when this fit joined it
        self._batch_step_offset = 0  # added to the optimizer's step count: see on_epoch_begin
        self._points: list[Metric] = []  # metric points gathered for the next log_batch
        self._points_sent_at = time.monotonic()
        # The first background write waits checkpoint_interval_s too: a short fit writes its
        # checkpoint once, at the end, from the same file as model/.
        self._last_checkpoint = time.monotonic()

    def _join_or_start_run(self) -> bool:
        """Use the active run (or MLFLOW_RUN_ID's); start one otherwise. False when MLflow is unreachable."""
        try:
            active = mlflow.active_run()
            if active is None:
                own = "MLFLOW_RUN_ID" not in os.environ  # else `mlflow run` owns it
                active = mlflow.start_run()
                self._owns_run = own
            self.run_id = active.info.run_id
            self._client = mlflow.MlflowClient()
        except Exception as error:  # unreachable server, bad URI: train without tracking
            log.warning("MLflow tracking is off for this fit: could not start a run (%s)", error)
            return False
        if self._owns_run:
            self._fit_thread = threading.current_thread()
            atexit.register(self._end_at_exit)
            _UNFINISHED[self.run_id] = self
            self._end_with_cell()
        self._local_dir = self.output_dir or Path(tempfile.mkdtemp(prefix=f"mlflow-{self.run_id[:8]}-"))
        return True

    def _end_unfinished(self, error: BaseException | None = None) -> None:
        """End the run of a fit that never reached on_train_end (it raised or was interrupted): KILLED
        for an interrupt, else FAILED, tagged with ``error`` where it is known. At the process's exit,
        when the notebook cell that ran the fit ends, or when the next fit on this thread begins."""
        reason = _UNFINISHED_REASON if error is None else _describe_error(error)[:MAX_TAG_VAL_LENGTH]
        self._sender.submit("failure.reason tag", partial(self._client.set_tag, self.run_id, "failure.reason", reason))
        self.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def _end_at_exit(self) -> None:
        on_main_thread = self._fit_thread is threading.main_thread()  # the thread a script's error ends
        self._end_unfinished(_error_ending_the_script() if on_main_thread else None)

    def _end_with_cell(self) -> None:
        """In IPython or Jupyter, a fit on the main thread, where cells run, that has not ended when its
        cell ends has raised: its run ends then, with the cell's error, not at the next fit or the
        kernel's exit."""
        shell = _ipython_shell()
        if shell is None or self._fit_thread is not threading.main_thread():
            return
        run_id = self.run_id

        def after_cell(result) -> None:
            shell.events.unregister("post_run_cell", after_cell)
            if _UNFINISHED.get(run_id) is self:
                self._end_unfinished(result.error_in_exec)

        shell.events.register("post_run_cell", after_cell)

    def _unwatch_unfinished(self) -> None:
        atexit.unregister(self._end_at_exit)
        _UNFINISHED.pop(self.run_id, None)

    def _end_fit_left_open(self) -> None:
        """The active run is one an MLflowCallback started for a fit that raised or was interrupted,
        and the process went on (a loop that catches errors): end it FAILED with what that fit
        gathered, so this fit gets a run of its own instead of logging into it."""
        active = mlflow.active_run()
        earlier = _UNFINISHED.get(active.info.run_id) if active else None
        if earlier is None or _inside_another_fit():  # a fit run by another's callback: that one goes on
            return
        log.warning(
            "MLflow run %s of an earlier fit that raised or was interrupted was still open; it ends FAILED "
            "and this fit gets a run of its own",
            earlier.run_id,
        )
        earlier._end_unfinished()

    def _stop_tracking(self, reason: str) -> None:
        """After a hook raised: what was queued or gathered is still sent, the run is tagged
        ``tracking.error``, and a run this callback started ends FAILED (one its owner started is
        left to the owner)."""
        self._active = self._lr_unread = False  # every hook does nothing more until the next fit
        self._unwatch_unfinished()
        # Already failing: nothing more to say than the error logged above.
        with suppress(Exception):
            if self._sender is not None:
                self._send_points()  # gathered before the error
                self._sender.close()
        with suppress(Exception):
            if self.run_id is not None:
                self._client.set_tag(self.run_id, "tracking.error", reason[:MAX_TAG_VAL_LENGTH])
        with suppress(Exception):
            if self._owns_run:
                self.finish_run("FAILED", tags={"failure.reason": reason[:MAX_TAG_VAL_LENGTH]})

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
        self._sender.submit("missing_epochs tag", partial(self._client.set_tag, self.run_id, "missing_epochs", missing))

    def _is_chief(self) -> bool:
        """Under a multi-worker tf.distribute strategy only the chief logs."""
        resolver = getattr(getattr(self.model, "distribute_strategy", None), "cluster_resolver", None)
        task_type = getattr(resolver, "task_type", None)
        if not task_type:
            return True
        if task_type == "chief":
            return True
        has_chief = "chief" in resolver.cluster_spec().as_dict()
        return task_type == "worker" and resolver.task_id == 0 and not has_chief

    def _continue_logged_epochs(self) -> None:
        """Joining a run that already has epochs (a resumed run): carry on its history, best and rate."""
        try:
            run = self._client.get_run(self.run_id)
            self._logged_params = dict(run.data.params)
            if self.log_every_n_steps:
                self._logged_batch_step = self._last_batch_step(run.data.metrics)
            rows: dict[int, dict] = {}
            for key in (key for key in run.data.metrics if not _SUMMARY.match(key)):
                for point in self._client.get_metric_history(self.run_id, key):
                    rows.setdefault(point.step, {"epoch": point.step})[key] = point.value
        except Exception as error:  # an unreachable server: start afresh rather than not at all
            log.warning("could not read the run's earlier epochs (%s)", error)
            return
        self._history = [rows[step] for step in sorted(rows)]
        if not self._history:
            return
        self._lr_in_force = self._history[-1].get("learning_rate")
        for before, after in zip(self._history, self._history[1:]):
            if before.get("learning_rate") != after.get("learning_rate"):
                self._lr_changes.append(
                    LearningRateChange(
                        after["epoch"], before.get("learning_rate"), after.get("learning_rate"), "earlier fit"
                    )
                )
        self._unranked_epochs = list(self._history)

    def _rank_logged_epochs(self) -> None:
        """The best of the epochs read back from the run. Ranked at this fit's first epoch end, not when
        they are read: Keras makes the metric objects that declare the monitor's direction at the first batch."""
        rows, self._unranked_epochs = self._unranked_epochs, []
        for row in rows:
            if self.monitor in row and math.isfinite(row[self.monitor]) and self._is_improvement(row[self.monitor]):
                self._best_value, self._best_epoch = row[self.monitor], row["epoch"]

    def _last_batch_step(self, logged_metrics: Mapping[str, float]) -> int | None:
        """The highest step of the run's batch-level metrics (None if it has none)."""
        key = next((key for key in logged_metrics if key.startswith("batch_")), None)
        return None if key is None else max(point.step for point in self._client.get_metric_history(self.run_id, key))

    # ----------------------------------------------------------------- learning rate

    def _optimizer_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _read_learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _remember_epoch_end(self, logs: dict) -> None:
        """What the rate and the logs looked like when this callback's on_epoch_end ran."""
        self._lr_at_epoch_end = self._read_learning_rate()
        self._epoch_logs = logs
        self._lr_logged_before_us = "learning_rate" in logs

    def _note_learning_rate(self, rate: float) -> None:
        if self._lr_in_force is not None and rate != self._lr_in_force:
            self._lr_changes.append(LearningRateChange(self._epoch, self._lr_in_force, rate, self._change_cause()))
        self._lr_in_force = rate

    def _change_cause(self) -> str:
        """Which kind of callback changed the rate, told from when in the epoch cycle it changed."""
        schedule = getattr(self.model.optimizer, "_learning_rate", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            return "schedule"
        if self._lr_at_epoch_end is None:
            return "new fit"  # a fit into a run with logged epochs (a resume, a second stage) starts at another rate
        if self._lr_at_epoch_end != self._lr_in_force:
            return "plateau"  # changed in on_epoch_end, by a callback before this one
        if self._lr_at_epoch_begin != self._lr_at_epoch_end:
            # Between this callback's on_epoch_end and its next on_epoch_begin: a plateau callback
            # after it, or a scheduler before it. ReduceLROnPlateau (and LearningRateScheduler)
            # add `learning_rate` to the epoch's logs, so a key that appeared after us is a plateau.
            appeared_after_us = not self._lr_logged_before_us and "learning_rate" in self._epoch_logs
            return "plateau" if appeared_after_us else "scheduler"
        return "scheduler"  # changed in on_epoch_begin, by a callback after this one

    # ----------------------------------------------------------------- metrics

    def _epoch_metrics(self, logs: dict) -> dict[str, float]:
        self._warn_not_numbers(logs)
        metrics = {key: value for key, value in _numbers(logs).items() if key != "learning_rate"}
        # Our own reading replaces the one Keras' LR callbacks put in the logs: theirs depends on order.
        metrics["learning_rate"] = self._lr_in_force
        metrics["epoch_time_s"] = time.perf_counter() - self._epoch_started
        if "loss" in metrics and "val_loss" in metrics:
            metrics["gap_loss"] = metrics["val_loss"] - metrics["loss"]
        accuracy = curves.accuracy_key(metrics)  # a model compiled with metrics=["acc"] logs acc
        if accuracy and f"val_{accuracy}" in metrics:
            metrics["gap_accuracy"] = metrics[accuracy] - metrics[f"val_{accuracy}"]
        return metrics

    def _warn_not_numbers(self, logs: dict) -> None:
        """Once a fit for each log key whose value cannot be a metric (a matrix, a string)."""
        for key, value in logs.items():
            if key in self._warned_not_numbers or _numbers({key: value}):
                continue
            self._warned_not_numbers.add(key)
            what = f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            log.warning(
                "MLflow run %s: %r is not logged: MLflow metrics are numbers, and its value is %s",
                self.run_id,
                key,
                what,
            )

    @_never_raises
    def _log_batch_metrics(self, batch, logs=None):
        # With steps_per_execution > 1, Keras calls this once per execution, with the epoch's index
        # of its last step: points are due whenever the steps pass a multiple of log_every_n_steps.
        steps_before, self._fit_steps = self._fit_steps, self._epoch_first_step + batch + 1
        if not self._active or steps_before // self.log_every_n_steps == self._fit_steps // self.log_every_n_steps:
            return
        step = self._optimizer_step() + self._batch_step_offset
        timestamp = int(time.time() * 1000)
        points = [Metric(f"batch_{key}", value, timestamp, step) for key, value in _numbers(logs or {}).items()]
        self._gather(points)
        self._send_points_if_due()

    def _gather(self, points: list[Metric], room: int = 0) -> None:
        """Keep ``points`` for the next log_batch, sending the kept ones first if all would not fit
        in one call with ``room`` more entities."""
        if len(self._points) + len(points) + room > MAX_ENTITIES_PER_BATCH:
            self._send_points()
        self._points.extend(points)

    def _send_points_if_due(self) -> None:
        # Short epochs share a call: each log_batch is a store transaction (or an HTTP request)
        # whose CPU time and GIL hold the training loop feels.
        if time.monotonic() - self._points_sent_at >= self.metrics_interval_s:
            self._send_points()

    def _send_points(self, tags: Mapping[str, str] | None = None) -> None:
        """The points gathered so far, and ``tags``, in one log_batch."""
        points, self._points = self._points, []
        self._points_sent_at = time.monotonic()
        if points or tags:
            run_tags = [RunTag(key, value) for key, value in (tags or {}).items()]
            self._sender.submit(
                _describe_points(points, tags),
                partial(self._client.log_batch, self.run_id, metrics=points, tags=run_tags),
            )

    def _send_model_facts_once(self) -> None:
        """Params and model_summary.txt, once the model is built: a subclassed model is built by
        its first batch, after on_train_begin."""
        if self._model_facts_sent or not self.model.built:
            return
        self._model_facts_sent = True
        self._send_params()
        self._upload(artifacts.write_text(model_facts.model_summary(self.model), self._local_dir / "model_summary.txt"))

    def _send_params(self) -> None:
        params = model_facts.model_params(self.model, self.params or {})
        params.update(self.extra_params)  # the caller's values win: they are the config as asked
        # MLflow refuses a changed value for a logged param; a continued run keeps the ones it has.
        new = [param for param in to_params(params) if param.key not in self._logged_params]
        for chunk in batches(new):
            self._sender.submit("params", partial(self._client.log_batch, self.run_id, params=chunk))

    # ----------------------------------------------------------------- best checkpoint

    def _track_best(self, epoch: int, logs: dict) -> None:
        self._rank_logged_epochs()
        value = logs.get(self.monitor)
        if value is None:
            # An epoch without validation (validation_freq > 1, or no validation data) may lack it;
            # a validated epoch that lacks it means a misnamed monitor. The end tells of the first kind.
            validated = any(key.startswith("val_") for key in logs) or not self.monitor.startswith("val_")
            if validated:
                self._warn_missing_monitor(logs)
            return
        if not math.isfinite(value) or not self._is_improvement(value):
            return
        self._best_value, self._best_epoch = float(value), epoch
        self._best_weights = self.model.get_weights()
        self._checkpoint.offer(self._best_weights)

    def _warn_missing_monitor(self, logs: dict) -> None:
        if not self._warned_missing_monitor:
            self._warned_missing_monitor = True
            log.warning("MLflowCallback monitors %r, which is not in the logs: %s", self.monitor, ", ".join(logs))

    def _maybe_checkpoint(self) -> None:
        """Queue a write of the newest best model unless one ran less than checkpoint_interval_s ago."""
        if self._checkpoint.pending and time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
            self._last_checkpoint = time.monotonic()
            self._send_checkpoint(self._checkpoint.save_pending)

    def _is_improvement(self, value: float) -> bool:
        if self._best_value is None:
            return True
        # Asked each time, not kept: Keras makes the compiled metric objects at the first batch.
        maximise = self.mode == "max" or (self.mode == "auto" and _goes_up(self.model, self.monitor))
        return value > self._best_value if maximise else value < self._best_value

    def _send_checkpoint(self, write) -> None:
        # Two steps on the sender's thread, in order: writing the file never needs the server, and
        # an upload that fails is a plain client call that can be retried or kept on disk.
        self._sender.submit(_WRITING_CHECKPOINT, write, local=True)
        self._upload(self._checkpoint.path, "checkpoints", needs=_WRITING_CHECKPOINT)

    # ----------------------------------------------------------------- end of training

    def _send_summary(self, status: str) -> None:
        metrics: dict[str, float] = {"lr_changes": len(self._lr_changes), "epochs_run": len(self._history)}
        if self._best_epoch is not None:
            metrics["best_epoch"] = self._best_epoch
            metrics[f"best_{sanitize_name(self.monitor)}"] = self._best_value
            # The other validation metrics at that epoch, so a comparison needs no metric histories.
            best_row = next(row for row in self._history if row["epoch"] == self._best_epoch)
            for key, value in best_row.items():
                if key.startswith("val_") and key != sanitize_name(self.monitor):
                    metrics[f"{key}_at_best"] = value
        self.stop_reason = self._stop_reason(status)
        tags = {"stop_reason": self.stop_reason}
        if self.stop_reason == "early_stopping":
            metrics["stopped_epoch"] = self._last_epoch
            tags["early_stopping.restored_best_weights"] = str(self._holds_best_weights()).lower()
        self._gather(_as_points(metrics, step=0), room=len(tags))
        self._send_points(tags)

    def _stop_reason(self, status: str) -> str:
        if status != "FINISHED":  # fit raised: an interrupt (KILLED) or an error (FAILED)
            return "interrupted" if status == "KILLED" else "error"
        planned = (self.params or {}).get("epochs")
        if self._last_epoch is None or not getattr(self.model, "stop_training", False):
            return "completed"
        if not math.isfinite(self._history[-1].get("loss", 0.0)):
            return "nan_loss"
        if planned is not None and self._last_epoch - (self._step_offset or 0) + 1 >= planned:
            return "completed"
        return "early_stopping"

    def _holds_best_weights(self) -> bool:
        """Whether the model ends fit with the best epoch's weights (EarlyStopping restored them)."""
        current = self.model.get_weights()
        return self._best_weights is not None and all(np.array_equal(a, b) for a, b in zip(current, self._best_weights))

    def _send_history(self) -> None:
        if not self._history:
            return
        # The CSVs are written on the sender's thread, after the model save: the plot is the longest
        # wait of the end of training, so this thread asks for it first.
        self._send_file(partial(artifacts.write_history, self._history), self._local_dir / "history.csv")
        self._send_file(partial(artifacts.write_lr_changes, self._lr_changes), self._local_dir / "lr_changes.csv")
        # Drawn by a helper process while this process saves the model on the sender's thread.
        self._upload(curves.plot_learning_curves(self._history, self._local_dir / "learning_curves.png"))

    def _send_file(self, write, path: Path) -> None:
        """``write(path)`` on the sender's thread, then the upload of ``path``."""
        writing = f"writing {path.name}"
        self._sender.submit(writing, partial(write, path), local=True)
        self._upload(path, needs=writing)

    def _upload(self, path: Path, folder: str | None = None, needs: str | None = None) -> None:
        self._sender.submit(path.name, partial(self._client.log_artifact, self.run_id, str(path), folder), needs=needs)

    def _send_best_model(self, with_checkpoint: bool) -> None:
        target = self._local_dir / "model"
        self._sender.submit(_WRITING_MODEL, partial(self._save_best_model, target), local=True)
        if with_checkpoint:
            # Copied from model/ by then; where model/ could not be written, Keras writes it alone.
            self._send_checkpoint(self._checkpoint.save_final)
        self._send_model_folder(target)

    def _send_logged_best_model(self) -> None:
        """A resumed run whose continuation never improved: its best model is the checkpoint it
        logged before it was interrupted."""
        try:
            if self._sender.unreachable:  # not minutes of MLflow's retries for a download that cannot work
                raise ConnectionError("the tracking server gave no answer")
            model = load_logged_checkpoint(self._client, self.run_id)
        except Exception as error:  # no checkpoint was logged, or the server is gone
            log.warning(
                "MLflow run %s: model/ not logged, its checkpoints/best.keras could not be read (%s)",
                self.run_id,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            return
        self._send_model(model)

    def _send_last_model(self) -> None:
        log.warning(
            "MLflow run %s: no epoch logged %r, so there is no best epoch; model/ holds the last epoch's model",
            self.run_id,
            self.monitor,
        )
        self._send_model(self.model)

    def _send_model(self, model: keras.Model) -> None:
        """``model`` as model/: saved on the sender's thread, then uploaded (and registered)."""
        target = self._local_dir / "model"
        self._sender.submit(_WRITING_MODEL, partial(self._save_model, model, target), local=True)
        self._send_model_folder(target)

    def _send_model_folder(self, target: Path) -> None:
        self._sender.submit(
            "model/", partial(self._client.log_artifacts, self.run_id, str(target), "model"), needs=_WRITING_MODEL
        )
        if self.registered_model_name:
            self._sender.submit(
                "registering model/",
                partial(mlflow.register_model, f"runs:/{self.run_id}/model", self.registered_model_name),
                needs=_WRITING_MODEL,
            )

    def _save_best_model(self, target: Path) -> None:
        """The best model as an MLflow Model in a local folder; its Keras file also becomes
        checkpoints/best.keras, so the model is saved once."""
        with self._checkpoint.final_model() as model:
            self._save_model(model, target)
        self._checkpoint.write_from(target / "data" / "model.keras")

    def _save_model(self, model: keras.Model, target: Path) -> None:
        """``model`` as an MLflow Model (Keras flavour) in a local folder."""
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)  # save_model writes the input example before it creates the folder
        try:
            with keras_saving.known_skipsets():
                mlflow.keras.save_model(
                    model,
                    str(target),
                    signature=model_facts.signature(model),
                    input_example=self.input_example,
                    # Named here: inferring them starts a subprocess that loads the model (seconds).
                    pip_requirements=[f"keras=={keras.__version__}", f"tensorflow=={model_facts.tensorflow_version()}"],
                )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # never a half-written model/ to upload
            raise

    def _spool_folder(self, run_id: str) -> Path:
        base = self.output_dir if self.output_dir is not None else Path.cwd() / "mlflow-unsent"
        return base / "unsent" / run_id


def _sent(call) -> bool:
    try:
        call()
        return True
    except Exception as error:  # the server is down or refuses: the caller keeps the call
        log.warning("MLflow tracking failed (%s)", str(error).splitlines()[0] if str(error) else type(error).__name__)
        return False


@contextmanager
def _no_http_retries() -> Iterator[None]:
    """MLflow's REST client reads its retry count from the environment at each request."""
    before = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = before


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    """Keras logs as metric names and numbers. A metric with one value per class (F1Score with
    average=None) gives one metric per class, <name>_<class>; any other value is left out (the
    callback warns of it once a fit)."""
    numbers = {}
    for key, value in logs.items():
        if isinstance(value, (int, float, np.number)):
            numbers[sanitize_name(key)] = float(value)
        elif isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.number):
            numbers.update({sanitize_name(f"{key}_{index}"): float(item) for index, item in enumerate(value)})
    return numbers


def _goes_up(model: keras.Model, monitor: str) -> bool:
    """Whether the monitored metric is better higher, as Keras' own callbacks tell in mode auto:
    by the direction its metric object declares; by its name where it declares none."""
    name = monitor.removeprefix("val_")
    for metric in getattr(model, "metrics", []):
        for inner in getattr(metric, "metrics", None) or [metric]:  # compiled metrics come in a container
            direction = getattr(inner, "_direction", None)
            if inner.name == name and direction in ("up", "down"):
                return direction == "up"
    return any(sign in monitor for sign in _MAX_SIGNS)


def _made_folder(path: Path) -> Path:
    """``path``, made if need be; a ValueError naming it where no folder can be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"output_dir={str(path)!r}: expected a folder that can be made ({error.strerror})") from None
    return path


def _warn_if_autologging() -> None:
    """MLflow's autologging of Keras fits logs the same metrics into the same run: say so once a fit."""
    on = [flavour for flavour in ("tensorflow", "keras") if not autologging_is_disabled(flavour)]
    if on:
        log.warning(
            "MLflow autologging of Keras fits is on (%s): it logs this fit's metrics too, so each epoch's "
            "points appear twice, and it slows training; switch it off with %s",
            ", ".join(f"mlflow.{flavour}.autolog()" for flavour in on),
            ", ".join(f"mlflow.{flavour}.autolog(disable=True)" for flavour in on),
        )


def _inside_another_fit() -> bool:
    """Whether this fit runs inside another fit on this thread (called from one of its callbacks)."""
    fits = [frame.f_code for frame, _ in traceback.walk_stack(None) if frame.f_code.co_name == "fit"]
    return bool(fits) and fits[0] in fits[1:]


def _ipython_shell():
    """The IPython (or Jupyter) shell running this code, if any; IPython is not imported here."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _error_ending_the_script() -> BaseException | None:
    """At exit: the exception no code caught, which Python keeps as sys.last_value. In an interactive
    session that may be an older one, so there it is not known."""
    if hasattr(sys, "ps1") or sys.flags.interactive or _ipython_shell() is not None:
        return None
    return getattr(sys, "last_value", None)


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _as_points(metrics: Mapping[str, float | None], step: int) -> list[Metric]:
    timestamp = int(time.time() * 1000)
    return [Metric(key, value, timestamp, step) for key, value in metrics.items() if value is not None]


def _describe_points(points: list[Metric], tags: Mapping[str, str] | None) -> str:
    """What one log_batch holds, as warnings and the list of what was not sent name it."""
    epochs = sorted({point.step for point in points if not _SUMMARY.match(point.key)})
    steps = sorted({point.step for point in points if point.key.startswith("batch_")})
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
