"""What would fail once TensorFlow has loaded or a run exists, checked before: the tracking store
(reachable, its API answering, the experiment not deleted, writable where it is local), the
folders the runner writes to, and a sweep's cluster launcher (experiments/cluster.py). Each problem
is one ConfigError naming the key and what was found.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from sqlalchemy.engine import make_url

from experiments.checks import ConfigError
from experiments.cli import TrackingStoreError, open_tracking_store
from experiments.cluster import check_launcher
from experiments.search import check_sweep_space
from plugins.errors import first_line
from plugins.redaction import redact_text
from plugins.tracking_server import ServerUnreachable, api_problem, permission_problem, wait_for_server

# The arguments by which Keras' callbacks name what they write (ModelCheckpoint, CSVLogger,
# TensorBoard, BackupAndRestore).
OUTPUT_PATHS = ("filepath", "filename", "log_dir", "backup_dir")


def unwritable(path: str | Path) -> str | None:
    """Why a file or folder could not be made or written at ``path``; None when it can."""
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != target and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    if existing.is_file() and not os.access(existing, os.W_OK):
        return f"{existing} is read-only"
    return None


def check_output_paths(cfg: DictConfig) -> None:
    """Every file or folder a configured Keras callback writes (a checkpoint, a CSV, TensorBoard)."""
    for name, callback in (cfg.get("callbacks") or {}).items():
        for arg in OUTPUT_PATHS:
            path = (callback or {}).get(arg)
            problem = path and unwritable(str(path))
            if problem:
                raise ConfigError(f"callbacks.{name}.{arg}={path}: {problem}")


def check_store(uri: str | None, experiment_name: str, wait_for_server_s: float) -> mlflow.MlflowClient:
    """The store at ``uri`` (None: MLflow's own resolution), ready to take a run of ``experiment_name``."""
    resolved = uri or mlflow.get_tracking_uri()
    try:
        wait_for_server(resolved, wait_for_server_s)
        problem = api_problem(resolved)
        if problem and problem.startswith(("HTTP 401", "HTTP 403")):
            raise ConfigError(
                f"mlflow.tracking_uri={redact_text(resolved)}: the server refused the credentials ({problem}); "
                "give a user it knows in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; nothing was trained"
            )
        if problem:
            raise ConfigError(
                f"mlflow.tracking_uri={redact_text(resolved)}: the server answers its health check "
                f"but not its API ({problem}); nothing was trained"
            )
        client = open_tracking_store(uri)
        experiment = _live_experiment(client, experiment_name)
        problem = permission_problem(resolved, experiment.experiment_id if experiment else None)
        if problem:
            raise ConfigError(
                f"mlflow.experiment_name={experiment_name}: {problem}; ask its owner or an admin of "
                f"{redact_text(resolved)} to grant it; nothing was trained"
            )
    except ServerUnreachable as error:
        raise ConfigError(f"{error} (mlflow.wait_for_server_s); nothing was trained") from None
    except TrackingStoreError as error:
        raise ConfigError(f"mlflow.tracking_uri: {error}") from None
    problem = _unwritable_store(client.tracking_uri, experiment, client)
    if problem:
        raise ConfigError(f"mlflow.tracking_uri={redact_text(resolved)}: {problem}")
    return client


def _live_experiment(client: mlflow.MlflowClient, name: str):
    """The experiment of that name, None if there is none yet; a deleted one takes no runs until it is
    restored: say so before training."""
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as error:
        raise TrackingStoreError(f"cannot read the experiments of {client.tracking_uri}: {first_line(error)}") from None
    if experiment is not None and experiment.lifecycle_stage == "deleted" and "MLFLOW_RUN_ID" not in os.environ:
        # (under `mlflow run` the run, and with it the experiment, is chosen already)
        raise ConfigError(
            f"mlflow.experiment_name={name}: the experiment is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another name"
        )
    return experiment


def _unwritable_store(uri: str, experiment, client: mlflow.MlflowClient) -> str | None:
    """Why a local store could take no run: its SQLite file, or the folder its artifacts go to."""
    if uri.startswith("sqlite:"):
        database = make_url(uri).database
        if database and database != ":memory:":
            problem = unwritable(database) or unwritable(Path(database).absolute().parent)  # and its journal
            if problem:
                return f"the store cannot be written: {problem}"
    location = experiment.artifact_location if experiment else _default_artifact_root(client)
    parsed = urlparse(location or "")
    if location and parsed.scheme in ("", "file"):
        problem = unwritable(parsed.path if parsed.scheme else location)
        if problem:
            return f"the run's files cannot be stored: {problem}"
    return None


def _default_artifact_root(client: mlflow.MlflowClient) -> str | None:
    """Where a new experiment's artifacts go, for the stores that say (a database store); MLflow has
    no public call for it."""
    try:
        return client._tracking_client.store.artifact_root_uri
    except AttributeError:
        return None


class Preflight(Callback):
    """Before Hydra makes its output folder, or a sweep its parent run: a folder that cannot be
    written, or a sweep's store that cannot take runs, is one line on stderr and exit 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse_if(lambda: _check_folder("hydra.run.dir", config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        def check() -> None:
            _check_folder("hydra.sweep.dir", config.hydra.sweep.dir)
            settings = OmegaConf.select(config, "mlflow")
            check_sweep_space(config)
            check_store(settings.tracking_uri, settings.experiment_name, settings.wait_for_server_s)
            check_launcher(config)  # last: it may start Ray

        self._refuse_if(check)

    @staticmethod
    def _refuse_if(check) -> None:
        try:
            check()
        except ConfigError as error:
            print(f"error: {redact_text(str(error))}", file=sys.stderr)
            raise SystemExit(2) from None


def _check_folder(key: str, folder: str) -> None:
    problem = unwritable(folder)
    if problem:
        raise ConfigError(f"{key}={folder}: {problem}")
