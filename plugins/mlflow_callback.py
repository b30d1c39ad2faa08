"""MLflowCallback: record a Keras training run in MLflow at near-zero cost to training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.utils.autologging_utils import autologging_is_disabled
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from plugins import run_binding
from plugins import tags as tag_names
from plugins.containment import end_unfinished, never_raises, stop_tracking
from plugins.delivery import keep_unsent_calls
from plugins.fit import Fit
from plugins.params import flatten
from plugins.run_binding import RunBinding, RunSettings
from plugins.settings import TrackingSettings, check_mapping, made_folder

log = logging.getLogger(__name__)


class MLflowCallback(keras.callbacks.Callback):
    """Log params, per-epoch metrics, learning-rate changes, early-stopping facts and the best
    checkpoint of a Keras ``fit`` to MLflow.

    It logs into the active MLflow run. With none, it starts one at ``on_train_begin`` and ends it
    at ``on_train_end``; if ``fit`` raised, KILLED for an interrupt and FAILED otherwise, when the
    process exits, the IPython cell ends or the thread's next fit begins. Under ``mlflow run`` the
    run named by ``MLFLOW_RUN_ID`` is used and left for ``mlflow run`` to end. ``start_run()`` starts
    the run before ``fit`` for a caller that ends it itself (``finish_run``). All sending happens on
    one background thread; a tracking failure warns once and never stops training.

    Args: the fields of ``plugins.settings.TrackingSettings`` (each is described there), and:
        params: extra params to log, nested or flat (e.g. the whole Hydra config).
        experiment_name, run_name, tags, tracking_uri, run_id, wait_for_server_s, log_system_metrics:
            how a run this callback starts is made (``plugins.run_binding.RunSettings``).
        register_model_name: the old name of registered_model_name (a FutureWarning; removed next release).
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
        checkpoint_interval_s: float | None = None,
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
        check_mapping("params", params, "a mapping of names to values (a dict, a Hydra config)")
        check_mapping("tags", tags, "a mapping of tag names to values")
        run = RunSettings(
            experiment_name, run_name, dict(tags or {}), tracking_uri, wait_for_server_s, run_id, log_system_metrics
        )
        self.settings = TrackingSettings(
            monitor=monitor,
            mode=mode,
            params=flatten(params or {}),
            log_every_n_steps=log_every_n_steps,
            log_model=log_model,
            registered_model_name=registered_model_name or _old_name(register_model_name),
            registered_model_alias=registered_model_alias,
            input_example=input_example,
            diagnostics=diagnostics,
            diagnostics_data=diagnostics_data,
            metrics_interval_s=metrics_interval_s,
            checkpoint_interval_s=checkpoint_interval_s,
            flush_timeout_s=flush_timeout_s,
            output_dir=Path(output_dir) if output_dir else None,
            run=run,
        )
        made_folder(self.settings.output_dir)
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

    @never_raises
    def on_train_begin(self, logs=None):
        run_binding.end_fit_left_open()  # first: it may be this callback's own last fit
        self._fit, self._binding, self.run_id, self.stop_reason, self.missing = None, None, None, None, []
        binding = run_binding.bind_run(self.settings.run, self._started) if run_binding.is_chief(self.model) else None
        if binding is None:
            return
        self._binding, self.run_id = binding, binding.run_id
        _warn_if_autologging()
        self._fit = Fit(self.settings, lambda: self.model, binding, self.params)
        if binding.ends_with_fit:
            binding.watch_unfinished(partial(end_unfinished, self._fit, self.end))
        self._fit.begin()

    @never_raises
    def on_epoch_begin(self, epoch, logs=None):
        if self._tracking:
            self._fit.epoch_begins(epoch)

    @never_raises
    def on_train_batch_begin(self, batch, logs=None):
        if self._tracking:
            self._fit.rate.batch_begins()

    @never_raises
    def on_epoch_end(self, epoch, logs=None):
        if self._tracking:
            self._fit.epoch_ends(epoch, logs or {})

    @never_raises
    def on_train_end(self, logs=None):
        self.end("FINISHED")

    @never_raises
    def _log_batch_metrics(self, batch, logs=None):
        if self._fit is not None:
            self._fit.batch_ends(batch, logs, self.settings.log_every_n_steps)

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
        return self._fit.publisher.checkpoint.best_weights() if self._fit else None

    def start_run(self) -> mlflow.ActiveRun:
        """Start the run now, before ``fit`` (or join the one ``mlflow run`` made, or reopen ``run_id``),
        so the caller can log into it; the caller ends it with ``finish_run``. Raises what MLflow raises."""
        run = run_binding.start_run(self.settings.run)
        fresh = self.settings.run.run_id is None
        self._started = RunBinding(run.info.run_id, mlflow.MlflowClient(), fresh=fresh, ends_with_fit=False)
        self.run_id = run.info.run_id
        return run

    @never_raises
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
        kept with the run's other unsent calls for ``python -m plugins.sync``.
        """
        unreachable = self._fit is not None and self._fit.server_unreachable
        finished_after_sync = status == "FINISHED" and bool(self.missing)
        if finished_after_sync:
            status, tags = "FAILED", {**(tags or {}), **_missing_files_tags(self.missing, self.unsent_folder)}
        folders = {name: Path(folder) for name, folder in (folders or {}).items()}
        run_id, unsent = run_binding.finish_active_run(status, metrics, tags, unreachable, folders)
        self._started = None
        if finished_after_sync and run_id:
            unsent.append(
                ("ending the run FINISHED", partial(mlflow.MlflowClient().set_terminated, run_id, "FINISHED"))
            )
        if unsent:
            self.unsent_folder = keep_unsent_calls(unsent, run_id, self.settings.spool_base)

    # ----------------------------------------------------------------- failures

    @property
    def _tracking(self) -> bool:
        return self._fit is not None and self._fit.active

    def _stop_tracking(self, reason: str) -> None:
        if self._binding is not None:
            stop_tracking(self._binding, self._fit, reason[:MAX_TAG_VAL_LENGTH], self.finish_run)


def _missing_files_tags(missing: list[str], unsent_folder: Path | None) -> dict[str, str]:
    """A run whose files the store did not take ends FAILED, saying what is missing, until
    plugins.sync has sent them and ends it FINISHED."""
    reason = f"not stored: {', '.join(missing)}; kept for python -m plugins.sync {unsent_folder}"
    return {tag_names.MISSING_FILES: ", ".join(missing), tag_names.FAILURE_REASON: reason}


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
