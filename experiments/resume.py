"""`resume=RUN_ID`: continue a KILLED or FAILED run in place, with its own config.

Checked before TensorFlow loads: the run must exist in this experiment, must not be RUNNING or
FINISHED, and the overrides given now may change no logged param but trainer.epochs.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.backups import recorded_backup
from experiments.checks import ConfigError
from experiments.cli import TrackingStoreError, read_run
from experiments.command import override_key, without_keys
from experiments.logged_overrides import checked_overrides
from experiments.run_identity import training_params
from plugins import tags
from plugins.errors import first_line
from plugins.params import to_params

log = logging.getLogger(__name__)

# May differ between the interrupted run and its continuation: they change no result.
CHANGEABLE = {"trainer.epochs", "fit.epochs", "trainer.verbose", "resume"}
RESUMABLE = {"KILLED", "FAILED"}


@dataclass(frozen=True)
class ResumePoint:
    run_id: str
    next_epoch: int  # epochs already logged; training continues with this one
    backup_dir: str | None  # Keras BackupAndRestore's folder, from this machine's record, when it holds the run's
    learning_rate: float | None = None  # the rate of the last logged epoch
    no_backup: str = ""  # why there is no backup to continue from


def prepare_resume(cfg: DictConfig, given_overrides: list[str]) -> tuple[DictConfig, ResumePoint | None]:
    """The config to train with and where to continue; cfg unchanged and None when not resuming."""
    if not cfg.resume:
        return cfg, None
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    run = _fetch(client, cfg.resume)
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"resume={cfg.resume}: the run is deleted; restore it first (mlflow.MlflowClient().restore_run)"
        )
    if not _resumable(run):
        raise ConfigError(
            f"resume={cfg.resume}: the run is {run.info.status}; only KILLED or FAILED runs can be resumed"
            + (" (another process may still be training it)" if run.info.status == "RUNNING" else "")
        )
    logged = logged_overrides(client, run.info.run_id)
    if logged is None:
        raise ConfigError(f"resume={run.info.run_id}: the run has no logged config (hydra/overrides.yaml)")
    checked = checked_overrides(run.info.run_id, _not_given(logged, given_overrides))
    if checked.warning(run.info.run_id):
        log.warning("%s", checked.warning(run.info.run_id))
    resumed = _compose(run.info.run_id, [*checked.kept, *given_overrides])
    experiment = client.get_experiment(run.info.experiment_id).name
    if experiment != resumed.mlflow.experiment_name:
        raise ConfigError(
            f"resume={cfg.resume}: the run belongs to experiment {experiment!r}, not {resumed.mlflow.experiment_name!r}"
        )
    _refuse_changed_params(resumed, run)
    backup_dir, no_backup = _backup(resumed, run.info.run_id)
    return resumed, ResumePoint(
        run.info.run_id,
        _epochs_logged(client, run.info.run_id),
        backup_dir,
        run.data.metrics.get("learning_rate"),
        no_backup,
    )


def claim(client: mlflow.MlflowClient, resume: ResumePoint, wait_s: float = 1.0) -> str:
    """Make this process the one that resumes the run, or refuse; the run's status before (for
    ``release``). MLflow has no compare-and-set, so each resume writes its own token, waits ``wait_s``
    for any other to write too, and reads back. The last writer sees its token and takes the run
    (RUNNING, with this process's tags) at once; every other sees another token, or, if it wrote after
    the winner read back, the run already RUNNING."""
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    try:
        _write_claim(client, resume.run_id, token)
        time.sleep(wait_s)
        run = client.get_run(resume.run_id)
        won = run.data.tags.get(tags.RESUME_CLAIM) == token and _resumable(run)
        if won:
            client.update_run(resume.run_id, status="RUNNING")
            client.set_tag(resume.run_id, tags.PROCESS_HOST, socket.gethostname())
            client.set_tag(resume.run_id, tags.PROCESS_PID, str(os.getpid()))
    except Exception as error:  # the store refused or went away between the checks and now
        raise ConfigError(f"resume={resume.run_id}: cannot claim the run: {first_line(error)}") from None
    if not won:
        raise ConfigError(f"resume={resume.run_id}: another process is resuming this run; nothing was trained here")
    return run.info.status


def release(client: mlflow.MlflowClient, run_id: str, status: str) -> None:
    """Give a claimed run back, with the status it had, when its resume ends before training begins."""
    try:
        client.update_run(run_id, status=status)
    except Exception as error:  # the store went away: the run stays RUNNING until a resume finds its process gone
        log.warning("run %s could not be given back its status %s: %s", run_id, status, first_line(error))


def _write_claim(client: mlflow.MlflowClient, run_id: str, token: str) -> None:
    """Two claims written at the same instant can collide in the store (SQLite's insert of the same tag
    key): the later one writes again, so that it is the last writer, as the claim expects."""
    try:
        client.set_tag(run_id, tags.RESUME_CLAIM, token)
    except mlflow.exceptions.MlflowException:
        time.sleep(0.2)
        client.set_tag(run_id, tags.RESUME_CLAIM, token)


def _resumable(run) -> bool:
    return run.info.status in RESUMABLE or _process_is_gone(run)


def _compose(run_id: str, overrides: list[str]) -> DictConfig:
    try:
        return compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:  # e.g. a group given now drops a key the run set
        reason = first_line(error)
        raise ConfigError(
            f"resume={run_id}: the run's overrides ({' '.join(overrides)}) do not compose: {reason}"
        ) from None


def _process_is_gone(run) -> bool:
    """A RUNNING run whose training process on this machine no longer exists (killed with -9, or the
    machine went down): nothing will ever end it, so it may be resumed."""
    if run.info.status != "RUNNING" or tags.read(run.data.tags, tags.PROCESS_HOST) != socket.gethostname():
        return False
    try:
        os.kill(int(tags.read(run.data.tags, tags.PROCESS_PID, "0")), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def _fetch(client: mlflow.MlflowClient, run_id: str):
    try:
        run = read_run(client, run_id)
    except TrackingStoreError as error:
        raise ConfigError(f"resume={run_id}: {error}") from None
    if run is None:
        raise ConfigError(f"resume={run_id}: no such run in {client.tracking_uri}")
    return run


def logged_overrides(client: mlflow.MlflowClient, run_id: str) -> list[str] | None:
    """The Hydra overrides a run was started with (its hydra/overrides.yaml); None when it has none."""
    overrides = _logged_yaml(client, run_id, "hydra/overrides.yaml")
    if overrides is _NOT_LOGGED:
        return None
    if not isinstance(overrides, list):
        raise ConfigError(f"run {run_id}: its hydra/overrides.yaml is not a list of overrides")
    return overrides


_NOT_LOGGED = object()


def _logged_yaml(client: mlflow.MlflowClient, run_id: str, artifact: str):
    """A YAML artifact of the run, read as data (None when it does not parse); _NOT_LOGGED when absent."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, artifact, folder)
        except Exception:  # no such artifact (MLflow raises several kinds)
            return _NOT_LOGGED
        try:
            return yaml.safe_load(Path(path).read_text()) or []
        except (yaml.YAMLError, UnicodeDecodeError):
            return None


def _not_given(logged: list[str], given: list[str]) -> list[str]:
    """The run's overrides that this command does not give again (a key given now replaces the logged one)."""
    return [override for override in without_keys(logged, given) if override_key(str(override)) != "resume"]


def _refuse_changed_params(cfg: DictConfig, run) -> None:
    wanted = {param.key: param.value for param in to_params(training_params(cfg))}
    changed = sorted(
        key
        for key, value in wanted.items()
        if key not in CHANGEABLE and key in run.data.params and run.data.params[key] != value
    )
    if changed:
        shown = ", ".join(f"{key}={wanted[key]} (logged: {run.data.params[key]})" for key in changed[:5])
        raise ConfigError(
            f"resume={run.info.run_id}: a resumed run keeps its params; only trainer.epochs may change, not {shown}"
        )


def _epochs_logged(client: mlflow.MlflowClient, run_id: str) -> int:
    steps = [metric.step for metric in client.get_metric_history(run_id, "loss")]
    return max(steps) + 1 if steps else 0


def _backup(cfg: DictConfig, run_id: str) -> tuple[str | None, str]:
    """(the run's backup folder, "") where this machine recorded one and BackupAndRestore is on (it
    continues there); else (None, why not). Every other file goes to this command's own folder."""
    if not OmegaConf.select(cfg, "callbacks.backup_and_restore"):
        return None, "callbacks.backup_and_restore is off"
    folder, reason = recorded_backup(run_id)
    if folder is not None:
        OmegaConf.update(cfg, "callbacks.backup_and_restore.backup_dir", folder)
    return folder, reason or ""
