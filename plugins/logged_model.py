"""model/ as an MLflow 3 logged model: listed in the experiment's Models tab, linked to the run at the
best epoch's step with that epoch's metrics, loadable as ``models:/<model_id>`` (and ``runs:/<run>/model``),
and what the Model Registry registers.

The run keeps its own copy in its files (``model/``): that upload is a plain call that
``plugins.sync`` can send when the server was away; this one is made only while it answers.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.utils.file_utils import local_file_uri_to_path as local_artifact_path

from plugins.errors import describe

log = logging.getLogger(__name__)
NAME = "model"


def log_model_and_register(
    client: mlflow.MlflowClient,
    run_id: str,
    local_dir: Path,
    step: int,
    registered_name: str | None,
    alias: str | None,
) -> None:
    """Log ``local_dir`` (a saved MLflow Model) as the run's logged model at ``step``; register it
    under ``registered_name`` with ``alias`` when given. Without a logged model (an older server), the
    run's own ``model/`` is what is registered."""
    try:
        model_id = log_model(client, run_id, local_dir, step)
        source = f"models:/{model_id}"
    except Exception as error:
        log.warning("MLflow run %s: model/ is in the run's files but no logged model (%s)", run_id, describe(error))
        source = f"runs:/{run_id}/{NAME}"
    if registered_name:
        version = mlflow.register_model(source, registered_name)
        if alias:
            client.set_registered_model_alias(registered_name, alias, version.version)


def log_model(client: mlflow.MlflowClient, run_id: str, local_dir: Path, step: int) -> str:
    """The logged model's id, once its files are uploaded and it is READY."""
    experiment_id = client.get_run(run_id).info.experiment_id
    model = client.create_logged_model(experiment_id, name=NAME, source_run_id=run_id, model_type="keras")
    try:
        client.log_model_artifacts(model.model_id, str(local_dir))
    except Exception:
        # Whole or absent: what a failed upload left in a local store goes, and so does the model.
        _remove_local_files(model.artifact_location)
        client.delete_logged_model(model.model_id)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    link_metrics(client, run_id, model.model_id, step)
    return model.model_id


def link_metrics(client: mlflow.MlflowClient, run_id: str, model_id: str, step: int) -> None:
    """The run's metrics at ``step`` become the model's too (as MLflow's own log_model does): the same
    points, with the model's id."""
    linked = [
        Metric(point.key, point.value, point.timestamp, point.step, model_id=model_id, run_id=run_id)
        for key in client.get_run(run_id).data.metrics
        for point in client.get_metric_history(run_id, key)
        if point.step == step and point.model_id is None
    ]
    if linked:
        client.log_batch(run_id, metrics=linked)


def _remove_local_files(artifact_location: str) -> None:
    """A logged model's files in a local artifact store (a server or cloud store writes whole objects)."""
    if artifact_location.startswith(("file:", "/")):
        shutil.rmtree(local_artifact_path(artifact_location), ignore_errors=True)
