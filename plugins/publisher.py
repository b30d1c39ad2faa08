"""Publishing a fit's files and model: params and summary once the model is built, the best
checkpoint during training, and at the end the summary, history, plot and model/."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import keras
import mlflow
import numpy as np

from plugins import artifacts, curves, keras_saving, keras_serving, logged_model, model_facts
from plugins.checkpoint import BestCheckpoint, load_logged_checkpoint
from plugins.delivery import Delivery
from plugins.errors import first_line
from plugins.params import batches, sanitize_name, to_params
from plugins.settings import TrackingSettings

log = logging.getLogger(__name__)

# Local work on the sender's thread that the uploads of its files wait for.
WRITING_CHECKPOINT = "writing checkpoints/best.keras"
WRITING_MODEL = "writing model/"  # and checkpoints/best.keras from the same save, at the end


def stop_reason(
    status: str, stopped: bool, last_loss: float | None, fit_epochs: int | None, planned_epochs: int | None
) -> str:
    """Why training ended: ``completed``, ``early_stopping``, ``nan_loss``, or for a fit that raised,
    ``interrupted`` (KILLED) or ``error`` (FAILED). ``stopped``: a callback set ``model.stop_training``;
    ``fit_epochs``: the epochs this fit trained (None if none ended)."""
    if status != "FINISHED":
        return "interrupted" if status == "KILLED" else "error"
    if fit_epochs is None or not stopped:
        return "completed"
    if last_loss is not None and not math.isfinite(last_loss):
        return "nan_loss"
    if planned_epochs is not None and fit_epochs >= planned_epochs:
        return "completed"
    return "early_stopping"


def model_source(
    status: str, log_model: bool, has_best_weights: bool, has_best_epoch: bool, monitor_missing: bool
) -> str | None:
    """Which model becomes model/: ``best`` (this fit's best weights), ``logged best`` (a continued run
    that never improved: the checkpoint it logged before), ``last`` (no monitored metric to pick a
    best epoch by), or None (no model/: a fit that raised, or log_model off)."""
    if status != "FINISHED" or not log_model:
        return None
    if has_best_weights:
        return "best"
    if has_best_epoch:
        return "logged best"
    return "last" if monitor_missing else None


def summary_metrics(
    history: list[dict], lr_changes: int, best_epoch: int | None, best_value: float | None, monitor: str
) -> dict[str, float]:
    """The run's one-value metrics: counts, the best epoch and value, and the other validation
    metrics and the L1/L2 penalty at that epoch (so a comparison needs no metric histories)."""
    metrics: dict[str, float] = {"lr_changes": lr_changes, "epochs_run": len(history)}
    if best_epoch is not None:
        monitored = sanitize_name(monitor)
        metrics["best_epoch"] = best_epoch
        metrics[f"best_{monitored}"] = best_value
        best_row = next(row for row in history if row["epoch"] == best_epoch)
        metrics.update(
            {
                f"{key}_at_best": value
                for key, value in best_row.items()
                if (key.startswith("val_") or key == "penalty_loss") and key != monitored
            }
        )
    return metrics


class Publisher:
    """Queues a fit's files and model on its delivery's sender thread, each write before its upload.

    Args:
        delivery: the fit's Delivery.
        client, run_id: where the files go.
        local_dir: where they are written first.
        checkpoint: the fit's BestCheckpoint.
        settings: the callback's (checkpoint interval, registered model name and alias, input example).
        clock: seconds, monotonic (a fake one in tests).
    """

    def __init__(
        self,
        delivery: Delivery,
        client: mlflow.MlflowClient,
        run_id: str,
        local_dir: Path,
        checkpoint: BestCheckpoint,
        settings: TrackingSettings,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._delivery = delivery
        self._settings = settings
        self._client = client
        self._run_id = run_id
        self.local_dir = local_dir
        self.checkpoint = checkpoint
        self._clock = clock
        # The first background write waits checkpoint_interval_s too: a short fit writes its
        # checkpoint once, at the end, from the same file as model/.
        self._last_checkpoint = clock()
        self.model_facts_sent = False

    def send_model_facts(
        self,
        model: keras.Model,
        fit_params: Mapping,
        extra_params: Mapping,
        logged_params: Mapping[str, str],
        final: bool = False,
    ) -> None:
        """Params and model_summary.txt, once the model is built: a subclassed model is built by its
        first batch, after on_train_begin. ``final`` (the fit's end): what is known of a model that was
        never built (a GAN that trains its parts in its own train_step): the fit's params, no summary."""
        if self.model_facts_sent or not (model.built or final):
            return
        self.model_facts_sent = True
        params = model_facts.model_params(model, fit_params) if model.built else model_facts.fit_params(fit_params)
        params.update(extra_params)  # the caller's values win: they are the config as asked
        params = {key: value for key, value in params.items() if value is not None}  # None: not in use
        # MLflow refuses a changed value for a logged param; a continued run keeps the ones it has.
        new = [param for param in to_params(params) if param.key not in logged_params]
        for chunk in batches(new):
            self._delivery.submit("params", partial(self._client.log_batch, self._run_id, params=chunk))
        summary = model_facts.model_summary(model) if model.built else "<not built>"
        self._send_file(partial(artifacts.write_text, summary), self.local_dir / "model_summary.txt")

    def checkpoint_if_due(self) -> None:
        """Queue a write of the newest best model unless one ran less than checkpoint_interval_s ago
        (None: none during training)."""
        interval = self._settings.checkpoint_interval_s
        due = interval is not None and self._clock() - self._last_checkpoint >= interval
        if not (self.checkpoint.pending and due):
            return
        self.checkpoint.prepare_copy()
        if not self.checkpoint.no_copy:
            self._last_checkpoint = self._clock()
            self.send_checkpoint(self.checkpoint.save_pending)

    def send_checkpoint(self, write: Callable[[], None]) -> None:
        # Two steps on the sender's thread, in order: writing the file never needs the server, and
        # an upload that fails is a plain client call that can be retried or kept on disk.
        self._delivery.submit(WRITING_CHECKPOINT, write, local=True)
        self.upload(self.checkpoint.path, "checkpoints", needs=WRITING_CHECKPOINT)

    def send_history(self, history: list[dict], lr_changes: list, title: str, best_epoch: int | None) -> None:
        """history.csv, lr_changes.csv and learning_curves.png (under ``title``, ``best_epoch`` marked)."""
        if not history:
            return
        # The CSVs are written on the sender's thread, after the model save: the plot is the longest
        # wait of the end of training, so this thread asks for it first.
        self._send_file(partial(artifacts.write_history, history), self.local_dir / "history.csv")
        self._send_file(partial(artifacts.write_lr_changes, lr_changes), self.local_dir / "lr_changes.csv")
        # Drawn by a helper process while this process saves the model on the sender's thread.
        plot = self.local_dir / "learning_curves.png"
        try:
            self.upload(curves.plot_learning_curves(history, plot, title, best_epoch))
        except OSError as error:  # a full or read-only disk: the run goes without it, as with any file not written
            self._delivery.sender.give_up(f"writing {plot.name}", error)

    def send_model(self, source: str | None, model: keras.Model, monitor: str, step: int = 0) -> None:
        """model/ from ``source`` (see model_source); else only the pending checkpoint, if any."""
        checkpoint_due = self.checkpoint.pending
        if source == "best":
            self._send_saved(self._save_best_model)
            if checkpoint_due:  # in model/ by then; where model/ could not be written, Keras writes it alone
                self.send_checkpoint(self.checkpoint.save_final)
            self._send_model_folder(step)
        elif source == "logged best":
            self._send_logged_best_model(step)
        elif source == "last":
            log.warning(
                "MLflow run %s: no epoch logged %r, so there is no best epoch; the run's model is the last epoch's",
                self._run_id,
                monitor,
            )
            self._send_saved(partial(self._save, model))
            self._send_model_folder(step)
        elif checkpoint_due:
            self.send_checkpoint(self.checkpoint.save_final)

    def upload(self, path: Path, folder: str | None = None, needs: str | None = None) -> None:
        self._delivery.submit(
            path.name, partial(self._client.log_artifact, self._run_id, str(path), folder), needs=needs
        )

    def _send_file(self, write: Callable[[Path], object], path: Path) -> None:
        """``write(path)`` on the sender's thread, then the upload of ``path``."""
        writing = f"writing {path.name}"
        self._delivery.submit(writing, partial(write, path), local=True)
        self.upload(path, needs=writing)

    def _send_saved(self, save_into: Callable[[Path], None]) -> None:
        self._delivery.submit(WRITING_MODEL, partial(save_into, self.local_dir / "model"), local=True)

    def _send_model_folder(self, step: int = 0) -> None:
        """The saved model, stored once: as the run's logged model at the best epoch's ``step``, else
        (no logged model could be made) as the run's model/ files, a plain upload that plugins.sync
        can send after an outage. Then registered from that copy, where a name is given."""
        target = self.local_dir / "model"
        made: list[str] = []  # the logged model's id, once made

        def make_logged_model() -> None:
            model_id = logged_model.log_or_warn(self._client, self._run_id, target, step)
            if model_id:
                made.append(model_id)

        self._delivery.submit("logged model", make_logged_model, needs=WRITING_MODEL)
        upload = partial(self._client.log_artifacts, self._run_id, str(target), "model")
        self._delivery.submit("model/", upload, needs=WRITING_MODEL, unless=lambda: bool(made))
        if self._settings.registered_model_name:
            register = partial(self._register, made, step)
            self._delivery.submit("registered model", register, needs=WRITING_MODEL)

    def _register(self, made: list[str], step: int) -> None:
        source = f"models:/{made[0]}" if made else f"runs:/{self._run_id}/{logged_model.NAME}"
        name, alias = self._settings.registered_model_name, self._settings.registered_model_alias
        logged_model.register(self._client, self._run_id, source, step, name, alias)

    def _save(self, model: keras.Model, target: Path) -> None:
        save_mlflow_model(model, target, self._settings.input_example)

    def _save_best_model(self, target: Path) -> None:
        """The best model as an MLflow Model; its Keras file is the best checkpoint too, so the model
        is saved and stored once for both."""
        with self.checkpoint.final_model() as model:
            self._save(model, target)
        self.checkpoint.held_by_model()

    def _send_logged_best_model(self, step: int) -> None:
        """A resumed run whose continuation never improved: its best model is the checkpoint it
        logged before it was interrupted."""
        try:
            if self._delivery.unreachable:  # not minutes of MLflow's retries for a download that cannot work
                raise ConnectionError("the tracking server gave no answer")
            model = load_logged_checkpoint(self._client, self._run_id)
        except Exception as error:  # no checkpoint was logged, or the server is gone
            log.warning(
                "MLflow run %s: no model logged, its checkpoints/best.keras could not be read (%s)",
                self._run_id,
                first_line(error),
            )
            return
        self._send_saved(partial(self._save, model))
        self._send_model_folder(step)


def save_mlflow_model(model: keras.Model, target: Path, input_example: np.ndarray | None) -> None:
    """``model`` as an MLflow Model (Keras flavour) in a local folder; no half-written folder is left."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)  # save_model writes the input example before it creates the folder
    try:
        with keras_saving.known_skipsets():
            mlflow.keras.save_model(
                model,
                str(target),
                signature=model_facts.signature(model, input_example),
                input_example=input_example,
                # Named here: inferring them starts a subprocess that loads the model (seconds).
                pip_requirements=model_facts.pip_requirements(),
            )
        keras_serving.serve_with_own_pyfunc(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
