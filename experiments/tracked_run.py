"""The MLflow run of one training job, from its start to its end on every path.

The tracker (plugins.MLflowCallback, built from conf/mlflow/) starts, joins (``mlflow run``) or
reopens (resume) the run and ends it; this module says what the runner records into it and which
status and failure reason each way out of training gets.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shlex
import socket
import sys
import traceback
from pathlib import Path

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from experiments import PROJECT_ROOT
from experiments.backups import forget_backup, record_backup
from experiments.command import train_command
from experiments.data import Splits
from experiments.resume import ResumePoint, claim, release
from experiments.run_identity import composed_defaults, regularisation_label, run_name, training_params
from plugins import tags
from plugins.class_report import plot_confusion_matrix
from plugins.errors import describe
from plugins.provenance import git_state
from plugins.redaction import redact, redact_override, redact_text
from plugins.sweep import sweep_tags
from plugins.ui_link import ui_link

log = logging.getLogger(__name__)
# Errors of the disk a callback writes to (full, read-only, no permission, over quota).
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}


class TrainingStopped(CompactHydraException):
    """Training ended early for a reason the user reads in one line (interrupt, NaN loss).

    ``whole_sweep``: meant for every job of a sweep (an interrupt), not just this one. A Hydra
    CompactHydraException: where a sweep's driver re-raises it, Hydra prints its message alone."""

    def __init__(self, message: str, exit_code: int, whole_sweep: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.whole_sweep = whole_sweep

    def __reduce__(self):
        # A joblib worker sends it back to the sweep's driver pickled: with every argument, not the message alone.
        return type(self), (str(self), self.exit_code, self.whole_sweep)


def build_tracker(cfg: DictConfig, splits: Splits, resume: ResumePoint | None):
    """The MLflowCallback conf/mlflow/ names, given what only the runner knows: the config as params,
    the run's name and tags, an input example, the output folder and the run to resume."""
    reg, overrides = regularisation_label(cfg.reg), job_overrides()
    name = run_name(cfg, overrides, composed_defaults(cfg, overrides), keras_backend())
    return instantiate(
        cfg.mlflow,
        params=training_params(cfg),
        run_name=cfg.mlflow.run_name or name,
        tags={**cfg.mlflow.tags, **run_tags(cfg, reg)},
        run_id=resume.run_id if resume else None,
        input_example=splits.val.x[:5],
        diagnostics_data=training_sample(splits),
        output_dir=str(Path(HydraConfig.get().runtime.output_dir) / "mlflow"),
        _convert_="all",
    )


DIAGNOSTICS_SAMPLE_MAX = 1024  # examples: one evaluation step of a few ms on the default CNN


def training_sample(splits: Splits) -> tuple:
    """The training examples the diagnostics evaluate each epoch: as many as the validation split
    has, at most DIAGNOSTICS_SAMPLE_MAX; the split is already shuffled (stratified), so its first
    ones are a fair sample."""
    size = min(len(splits.val), len(splits.train), DIAGNOSTICS_SAMPLE_MAX)
    return splits.train.x[:size], splits.train.y[:size]


class LossBecameNaN(Exception):
    """callbacks.terminate_on_nan stopped training: there is no model worth testing."""


class TrackedRun:
    """``with TrackedRun(tracker, cfg, splits, resume) as run:`` starts the run and records the job's
    files and data; leaving it ends the run: FINISHED with the test metrics given to ``finish``,
    KILLED for an interrupt and FAILED for an error, each with its ``failure.reason``. An interrupt
    or a NaN loss leaves as TrainingStopped (one line for the user); any other error goes on."""

    def __init__(self, tracker, cfg: DictConfig, splits: Splits, resume: ResumePoint | None):
        self.tracker = tracker
        self.cfg = cfg
        self.splits = splits
        self.resume = resume
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.test_metrics: dict[str, float] = {}
        self.end_tags: dict[str, str] = {}
        self.root_files: Path | None = None  # files for the top of the run (the test split's figure)

    def __enter__(self) -> TrackedRun:
        # A resume takes its run last, when nothing but training is left: a run it claims, it trains.
        client = mlflow.MlflowClient(self.cfg.mlflow.tracking_uri)
        status_before = claim(client, self.resume) if self.resume else None
        try:
            run = self.tracker.start_run()
        except Exception as error:  # the store refused (read-only, a name it does not take, ...): no run exists
            if self.resume:
                release(client, self.resume.run_id, status_before)
            store = redact_text(mlflow.get_tracking_uri())
            raise TrainingStopped(f"cannot start a run in {store}: {describe(error)}; nothing was trained", 1) from None
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        backup_dir = OmegaConf.select(self.cfg, "callbacks.backup_and_restore.backup_dir", default=None)
        if backup_dir:
            record_backup(self.run_id, backup_dir)  # where a resume on this machine finds it
        try:
            if self.resume is None:
                record_job(run, self.cfg, self.splits)
            else:
                record_resume(run, self.resume)
        except Exception as error:  # e.g. the artifact store cannot be written
            reason = describe(error)
            self.tracker.finish_run("FAILED", tags={tags.FAILURE_REASON: reason[:MAX_TAG_VAL_LENGTH]})
            raise TrainingStopped(f"run {self.run_id} FAILED before training: {reason}", 1) from None
        return self

    def finish(self, test_metrics: dict[str, float], tags: dict[str, str] | None = None, matrix=None) -> None:
        """What the run ends with: the test split's metrics (per class too), tags known only after
        fit, and the test split's confusion matrix as confusion_matrix.png."""
        self.test_metrics = {f"test_{name}": float(value) for name, value in test_metrics.items()}
        self.end_tags = dict(tags or {})
        if matrix is not None:
            folder = Path(HydraConfig.get().runtime.output_dir) / "test_split"
            folder.mkdir(exist_ok=True)
            accuracy = self.test_metrics.get("test_accuracy", float("nan"))
            title = f"test split: {int(matrix.sum())} examples, accuracy {accuracy:.4f}"
            plot_confusion_matrix(matrix, title, folder / "confusion_matrix.png")
            self.root_files = folder

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self._finished()
        else:
            self._stopped(error)

    def _finished(self) -> None:
        """Training and the test ended: the run ends FINISHED (FAILED while a file is not stored)."""
        self.tracker.finish_run(
            "FINISHED", metrics=self.test_metrics, tags=self.end_tags, folders=self.written_folders()
        )
        forget_backup(self.run_id)
        accuracy = self.test_metrics.get("test_accuracy", float("nan"))
        name = self.tracker.settings.run.run_name
        log.info("run %s (%s): test_accuracy=%.4f; %s", self.run_id, name, accuracy, self.ui_link())
        if self.tracker.missing:
            folder = self.tracker.unsent_folder
            raise TrainingStopped(
                f"run {self.run_id} FAILED: {', '.join(self.tracker.missing)} not stored; "
                f"send them and finish the run with: python -m experiments.sync {folder}",
                1,
            )

    def _stopped(self, error: BaseException) -> None:
        """Training raised or was interrupted: the run ends KILLED or FAILED with its reason, and the
        command stops with one line (TrainingStopped) where the error is not a bug."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        try:
            self.tracker.end(status)  # what training produced so far: epochs, best checkpoint, history
        except KeyboardInterrupt:
            pass  # another signal, which skipped the wait for the server: the run still ends with its reason
        # An interrupt (plugins.interrupt.TrainingInterrupted, a KeyboardInterrupt) and a NaN loss say it all.
        reason = str(error) if isinstance(error, (KeyboardInterrupt, LossBecameNaN)) else describe(error)
        failure = {tags.FAILURE_REASON: reason[:MAX_TAG_VAL_LENGTH]}
        self.tracker.finish_run(status, tags=failure, folders=self.written_folders())
        if isinstance(error, KeyboardInterrupt):
            message = (
                f"{error}: run {self.run_id} ended KILLED; continue it with "
                f"python -m experiments.train resume={self.run_id}"
            )
            raise TrainingStopped(message, getattr(error, "exit_code", 130), whole_sweep=True) from None
        if isinstance(error, LossBecameNaN):
            raise TrainingStopped(
                f"run {self.run_id} FAILED: the loss became NaN; try a lower optimizer.learning_rate", 1
            ) from None
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:  # where files go, not a bug: no traceback
            close_what_the_failed_write_left_open(error)
            where = f" ({error.filename})" if error.filename else ""
            raise TrainingStopped(
                f"run {self.run_id} FAILED: {describe(error)}{where}; make room (the output folder is "
                f"{HydraConfig.get().runtime.output_dir}), then python -m experiments.train resume={self.run_id}",
                1,
            ) from None

    def written_folders(self) -> dict[str, str]:
        """Folders written beside training, logged into the run: TensorBoard's logs, and the test
        split's files at the run's top level ("")."""
        log_dir = OmegaConf.select(self.cfg, "callbacks.tensorboard.log_dir", default=None)
        written = {"tensorboard": log_dir} if log_dir else {}
        return written | ({"": str(self.root_files)} if self.root_files else {})

    def ui_link(self) -> str:
        return ui_link(mlflow.get_tracking_uri(), self.experiment_id, self.run_id)


def close_what_the_failed_write_left_open(error: OSError) -> None:
    """A write that failed on a full disk (Keras' backup, an HDF5 file) leaves its file open, and its
    close fails too: HDF5 then crashed the process as it exited (a segmentation fault, exit 139,
    instead of the one line and exit 1). Such a file is half-written, of no use to a resume: its
    bytes are dropped, which makes the room its close needs, and the file is removed."""
    traceback.clear_frames(error.__traceback__)
    gc.collect()
    h5py = sys.modules.get("h5py")
    for file in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) if h5py else []:
        if file.get_intent() != h5py.h5f.ACC_RDWR:
            continue  # open for reading: nothing half-written
        name = os.fsdecode(file.name)
        with contextlib.suppress(OSError):
            os.truncate(name, 0)
        with contextlib.suppress(Exception):
            file.close()
        with contextlib.suppress(OSError):
            os.remove(name)
        log.warning("removed %s, which the full disk left half-written", name)


def run_tags(cfg: DictConfig, reg: str) -> dict[str, str]:
    """What the run is (the tags a person filters by), where its code came from, how to re-run it,
    and which process trains it."""
    commit, dirty = git_state(PROJECT_ROOT)
    hydra = HydraConfig.get()
    return {
        **sweep_tags(hydra.job.num if hydra.mode == RunMode.MULTIRUN else None),
        tags.MODEL: cfg.model.name,
        tags.REG: reg,
        tags.REGULARISED: str(reg != "none").lower(),
        tags.DATA: cfg.data.name,
        tags.EARLY_STOPPING: str(bool(cfg.callbacks.get("early_stopping"))).lower(),
        tags.REDUCE_LR: str(bool(cfg.callbacks.get("reduce_lr_on_plateau"))).lower(),
        tags.GIT_COMMIT: commit or "unknown",
        tags.GIT_DIRTY: "unknown" if dirty is None else str(dirty).lower(),
        tags.REPRODUCE_COMMAND: train_command(job_overrides()),
        **process_tags(),
    }


def job_overrides() -> list[str]:
    """This job's overrides as typed, secrets redacted."""
    return [redact_override(override) for override in HydraConfig.get().overrides.task]


def process_tags() -> dict[str, str]:
    return {tags.PROCESS_HOST: socket.gethostname(), tags.PROCESS_PID: str(os.getpid())}


def record_job(run: mlflow.ActiveRun, cfg: DictConfig, splits: Splits) -> None:
    """A new run's Hydra files, how to re-run it (from the code state its tags recorded), and its data."""
    overrides = job_overrides()
    commit = run.data.tags.get(tags.GIT_COMMIT, "unknown")
    commit, dirty = (None if commit == "unknown" else commit), run.data.tags.get(tags.GIT_DIRTY) == "true"
    mlflow.log_text(OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True))), "hydra/config.yaml")
    mlflow.log_text(OmegaConf.to_yaml(overrides), "hydra/overrides.yaml")
    note = reproduce_note(run.info.run_id, overrides, commit, dirty, keras_backend())
    mlflow.log_text(note, "reproduce.txt")
    log_data_inputs(splits)


def record_resume(run: mlflow.ActiveRun, resume: ResumePoint) -> None:
    """The reopened run: which process trains it now, and the command and epoch of this resume."""
    resumes = int(run.data.tags.get(tags.RESUMES, "0")) + 1
    mlflow.set_tags(
        {
            **process_tags(),
            tags.RESUMES: str(resumes),
            tags.resume_command(resumes): train_command(job_overrides()),
            tags.resume_from_epoch(resumes): str(resume.next_epoch),
        }
    )
    if tags.FAILURE_REASON in run.data.tags:
        mlflow.delete_tag(tags.FAILURE_REASON)


def keras_backend() -> str:
    import keras  # loaded by now, with the backend the run trains on

    return keras.backend.backend()


def reproduce_note(
    run_id: str, overrides: list[str], commit: str | None, dirty: bool | None, backend: str = "tensorflow"
) -> str:
    """The command lines that re-run this configuration, for reproduce.txt: on its Keras backend."""
    state = (
        f"git commit {commit}" + (" with uncommitted changes" if dirty else "") if commit else "no git commit recorded"
    )
    on_backend = "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
    return "\n".join(
        [
            f"# Re-run this configuration (code: {state}).",
            *([f"git checkout {commit}"] if commit else []),
            on_backend + train_command(overrides),
            f"{on_backend}mlflow run . --env-manager local -P {shlex.quote('overrides=' + shlex.join(overrides))}",
            "# Re-run it and compare the metric histories:",
            f"python -m experiments.reproduce {run_id} --verify",
            "",
        ]
    )


def log_data_inputs(splits: Splits) -> None:
    """The data set as MLflow inputs: name, digest and size of each split (each its own digest: the
    folds of a cross-validation share the test split's and differ in the others)."""
    for context, split in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        dataset = mlflow.data.from_numpy(
            split.x, targets=split.y, name=f"{splits.name}-{context}", digest=split.digest()
        )
        for attempt in range(3):
            try:
                mlflow.log_input(dataset, context=context, tags={"samples": str(len(split))})
                break
            except mlflow.exceptions.MlflowException as error:
                # Parallel jobs registering the same data set race in MLflow's get-or-create
                # (a UNIQUE constraint); the retry finds the row the other job made.
                if attempt == 2:
                    log.warning("could not record the %s data set in MLflow: %s", context, str(error)[:200])
