"""MLflowCallback: record a Keras training run in MLflow at near-zero cost to training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from contextlib import suppress
from functools import partial, wraps
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.utils.autologging_utils import autologging_is_disabled
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from plugins import run_binding
from plugins import tags as tag_names
from plugins.delivery import keep_unsent_calls
from plugins.fit import Fit
from plugins.metric_names import MODES
from plugins.params import flatten
from plugins.run_binding import RunBinding, RunSettings

log = logging.getLogger(__name__)


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
    run named by ``MLFLOW_RUN_ID`` is used and left for ``mlflow run`` to end. ``start_run()`` starts
    the run before ``fit`` for a caller that ends it itself (``finish_run``). All sending happens on
    one background thread; a tracking failure warns once and never stops training.

    Args:
        monitor: metric that picks the best epoch, e.g. ``val_loss``.
        mode: ``min``, ``max`` or ``auto``: as Keras' callbacks, the direction the monitored metric
            declares (up for accuracy, AUC, R2Score, IoU, ...); for a metric that declares none, max
            for accuracy-like names and min otherwise.
        params: extra params to log, nested or flat (e.g. the whole Hydra config).
        experiment_name, run_name, tags, tracking_uri: for a run this callback starts; None: MLflow's.
        run_id: a logged run to reopen and continue (a resume) instead of starting one.
        wait_for_server_s: how long starting a run waits for an HTTP tracking server that does not answer.
        register_model_name: the old name of registered_model_name (a FutureWarning; removed next release).
        log_every_n_steps: also log ``batch_<metric>`` every N optimizer steps; None: epochs only.
        metrics_interval_s: least time between two log_batch calls of metrics. Epochs (and logged
            steps) that end sooner wait and go in the next call, each point with its own step; 0:
            one call per epoch. Everything waiting is sent before the run ends.
        log_model: log the best model as an MLflow Model (Keras flavour): the run's ``model/`` files, and
            an MLflow 3 logged model at the best epoch's step, with that epoch's metrics linked.
        registered_model_name: also register the logged model under this name.
        registered_model_alias: the alias the new version gets (None: none).
        input_example: a few inputs stored with the MLflow Model; their dtypes are its signature's.
        checkpoint_interval_s: least time between two background writes of checkpoints/best.keras,
            and from the start of training to the first (each costs CPU that training could use);
            the final best is always written.
        flush_timeout_s: at the end, how long to keep retrying what the tracking server did not take.
        output_dir: where local copies of the artifacts go; None: a temporary folder.
        log_system_metrics: record CPU, memory, disk and (where present) GPU use in a run this
            callback starts, with MLflow's system metrics (``system/...``); False leaves it to MLflow's
            own setting (``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``).
        diagnostics: also log ``penalty_loss`` and ``weight_norm`` each epoch and, with
            ``diagnostics_data``, ``train_eval_*``, ``gap_loss_eval``, ``gap_accuracy_eval`` (plugins/diagnostics.py).
        diagnostics_data: ``(x, y)``, a fixed sample of the training data, about the validation data's size.
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
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        wait_for_server_s: float = 0.0,
        register_model_name: str | None = None,
        log_system_metrics: bool = False,
        registered_model_alias: str | None = "candidate",
        diagnostics: bool = False,
        diagnostics_data: tuple[Any, Any] | None = None,
    ):
        super().__init__()
        seconds = dict(
            metrics_interval_s=metrics_interval_s,
            checkpoint_interval_s=checkpoint_interval_s,
            flush_timeout_s=flush_timeout_s,
            wait_for_server_s=wait_for_server_s,
        )
        _check_arguments(mode, params, tags, log_every_n_steps, diagnostics_data, **seconds)
        self.monitor = monitor
        self.mode = mode
        self.extra_params = flatten(params or {})
        self.log_every_n_steps = log_every_n_steps
        self.log_model = log_model
        self.registered_model_name = registered_model_name or _old_name(register_model_name)
        self.registered_model_alias = registered_model_alias
        self.input_example = input_example
        self.diagnostics, self.diagnostics_data = diagnostics, diagnostics_data
        self.metrics_interval_s = metrics_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.output_dir = _made_folder(Path(output_dir)) if output_dir else None
        self.run_settings = RunSettings(
            experiment_name, run_name, dict(tags or {}), tracking_uri, wait_for_server_s, run_id, log_system_metrics
        )
        if log_every_n_steps:
            # Bound per instance, not defined on the class: Keras dispatches batch-end hooks
            # asynchronously only while no callback overrides them, and epoch-only logging keeps that.
            self.on_train_batch_end = self._log_batch_metrics
        self.run_id: str | None = None
        self.stop_reason: str | None = None  # once training ended: completed, early_stopping, nan_loss, ...
        self.unsent_folder: Path | None = None  # where what the server never took was kept
        self.missing: list[str] = []  # what the store answered for but did not take (a full disk)
        self._started: RunBinding | None = None  # the run start_run() made for its caller
        self._binding: RunBinding | None = None  # the run of the current fit
        self._fit: Fit | None = None

    # ----------------------------------------------------------------- Keras hooks

    @_never_raises
    def on_train_begin(self, logs=None):
        run_binding.end_fit_left_open()  # first: it may be this callback's own last fit
        self._fit, self._binding, self.run_id, self.stop_reason, self.missing = None, None, None, None, []
        binding = run_binding.bind_run(self.run_settings, self._started) if run_binding.is_chief(self.model) else None
        if binding is None:
            return
        self._binding, self.run_id = binding, binding.run_id
        _warn_if_autologging()
        self._fit = Fit(self, binding, self.output_dir or Path.cwd() / "mlflow-unsent")
        if binding.ends_with_fit:
            binding.watch_unfinished(self._end_unfinished)
        self._fit.begin()

    @_never_raises
    def on_epoch_begin(self, epoch, logs=None):
        if self._tracking:
            self._fit.epoch_begins(epoch)

    @_never_raises
    def on_train_batch_begin(self, batch, logs=None):
        if self._tracking:
            self._fit.rate.batch_begins()

    @_never_raises
    def on_epoch_end(self, epoch, logs=None):
        if self._tracking:
            self._fit.epoch_ends(epoch, logs or {})

    @_never_raises
    def on_train_end(self, logs=None):
        self.end("FINISHED")

    @_never_raises
    def _log_batch_metrics(self, batch, logs=None):
        if self._fit is not None:
            self._fit.batch_ends(batch, logs, self.log_every_n_steps)

    # ----------------------------------------------------------------- public

    @property
    def best_epoch(self) -> int | None:
        return self._fit.best.epoch if self._fit else None

    @property
    def best_value(self) -> float | None:
        return self._fit.best.value if self._fit else None

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """Weights at the best epoch (a copy), e.g. to evaluate the test split with them."""
        return self._fit.best_weights if self._fit else None

    def start_run(self) -> mlflow.ActiveRun:
        """Start the run now, before ``fit`` (or join the one ``mlflow run`` made, or reopen ``run_id``),
        so the caller can log into it; the caller ends it with ``finish_run``. Raises what MLflow raises."""
        run = run_binding.start_run(self.run_settings)
        self._started = RunBinding(
            run.info.run_id, mlflow.MlflowClient(), fresh=self.run_settings.run_id is None, ends_with_fit=False
        )
        self.run_id = run.info.run_id
        return run

    @_never_raises
    def end(self, status: str = "FINISHED") -> None:
        """Send everything still pending; end the run with ``status`` if this callback started it.

        Called by ``on_train_end``; call it yourself with ``FAILED`` or ``KILLED`` when ``fit``
        raised, so the best checkpoint so far and the history still land.
        """
        fit = self._fit
        if fit is None or not fit.active:
            return
        fit.binding.unwatch()
        unsent, interrupt = fit.end(status)
        self.stop_reason, self.unsent_folder = fit.stop_reason, fit.delivery.unsent_folder
        # The store answered, yet these did not land (a full disk): the run must not look complete.
        self.missing = [] if fit.server_unreachable else unsent
        if fit.binding.ends_with_fit:
            self.finish_run(status)
        if interrupt is not None:
            raise interrupt  # it cut the wait short; what it was sent to stop still stops

    def finish_run(
        self,
        status: str = "FINISHED",
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        folders: Mapping[str, str | Path] | None = None,
    ) -> None:
        """Log last metrics and tags (e.g. test results, a failure reason) and folders written beside
        training (artifact folder -> local folder, e.g. ``{"tensorboard": log_dir}``), and end the
        active run with ``status``. Never raises for the tracking server: what it does not take is
        kept with the run's other unsent calls for ``python -m experiments.sync``.
        """
        unreachable = self._fit is not None and self._fit.server_unreachable
        later = []
        if status == "FINISHED" and self.missing:
            # FAILED, saying what is missing, until experiments.sync has sent it and ends the run FINISHED.
            reason = f"not stored: {', '.join(self.missing)}; kept for python -m experiments.sync {self.unsent_folder}"
            tags = {**(tags or {}), tag_names.MISSING_FILES: ", ".join(self.missing), tag_names.FAILURE_REASON: reason}
            status, later = "FAILED", ["FINISHED"]
        folders = {name: Path(folder) for name, folder in (folders or {}).items()}
        run_id, unsent = run_binding.finish_active_run(status, metrics, tags, unreachable, folders)
        self._started = None
        if later and run_id:
            unsent.append(
                ("ending the run FINISHED", partial(mlflow.MlflowClient().set_terminated, run_id, "FINISHED"))
            )
        if unsent:
            self.unsent_folder = keep_unsent_calls(unsent, run_id, self.output_dir or Path.cwd() / "mlflow-unsent")

    # ----------------------------------------------------------------- failures

    @property
    def _tracking(self) -> bool:
        return self._fit is not None and self._fit.active

    def _end_unfinished(self, error: BaseException | None = None) -> None:
        """End the run of a fit that never reached on_train_end (it raised or was interrupted): KILLED
        for an interrupt, else FAILED, tagged with ``error`` where it is known."""
        self._fit.tag_failure(error)
        self.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def _stop_tracking(self, reason: str) -> None:
        """After a hook raised: what was queued or gathered is still sent, the run is tagged
        ``tracking.error``, and a run this callback started ends FAILED (one its owner started is
        left to the owner)."""
        binding, reason = self._binding, reason[:MAX_TAG_VAL_LENGTH]
        if binding is None:
            return
        binding.unwatch()
        # Already failing: nothing more to say than the error logged above.
        with suppress(Exception):
            if self._fit is not None:
                self._fit.stop()
        with suppress(Exception):
            binding.client.set_tag(binding.run_id, tag_names.TRACKING_ERROR, reason)
        with suppress(Exception):
            if binding.ends_with_fit:
                self.finish_run("FAILED", tags={tag_names.FAILURE_REASON: reason})


def _check_arguments(mode: str, params, tags, log_every_n_steps, diagnostics_data, **seconds: float) -> None:
    """A ValueError naming the first argument that cannot work, before any training."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"params={params!r}: expected a mapping of names to values (a dict, a Hydra config)")
    if tags is not None and not isinstance(tags, Mapping):
        raise ValueError(f"tags={tags!r}: expected a mapping of tag names to values")
    if log_every_n_steps is not None and (not isinstance(log_every_n_steps, int) or log_every_n_steps < 1):
        raise ValueError(f"log_every_n_steps={log_every_n_steps!r}: expected None or a whole number >= 1")
    _check_diagnostics_data(diagnostics_data)
    for name, value in seconds.items():
        # Compared with clocks inside hooks that never raise: a bad one would end tracking mid-fit.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name}={value!r}: expected a number of seconds >= 0")


def _check_diagnostics_data(data: Any) -> None:
    if data is None:
        return
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and len(data[0]) == len(data[1]) > 0):
        raise ValueError("diagnostics_data: expected (x, y), a sample of the training data with as many x as y")


def _old_name(register_model_name: str | None) -> str | None:
    """registered_model_name's old name, kept one release with a warning."""
    if register_model_name is not None:
        warnings.warn(
            "MLflowCallback(register_model_name=...) and mlflow.register_model_name are renamed "
            "registered_model_name; the old name goes in the next release",
            FutureWarning,
            stacklevel=3,
        )
    return register_model_name


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
            "points appear twice, it slows training, and its own logged model is also named 'model', so "
            "runs:/<run id>/model may load autolog's model (of the first fit) instead of this callback's best "
            "one (load that by its models:/<model id>); switch it off with %s",
            ", ".join(f"mlflow.{flavour}.autolog()" for flavour in on),
            ", ".join(f"mlflow.{flavour}.autolog(disable=True)" for flavour in on),
        )
