"""The run's model as an MLflow 3 logged model named ``model``: listed in the experiment's Models tab
(its source run beside it), linked to the run at the best epoch's step with that epoch's metrics,
loadable as ``models:/<model_id>`` and ``runs:/<run>/model``, and what the Model Registry registers.

It is the run's one copy of the model. Where no logged model can be made (a server that is away or
has no logged models), the same files go into the run's own ``model/`` instead: a plain upload, which
``plugins.sync`` can send after an outage, and which ``runs:/<run>/model`` finds just the same.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, Metric, Run
from mlflow.utils.file_utils import local_file_uri_to_path as local_artifact_path

from plugins.errors import describe

log = logging.getLogger(__name__)
# Its name: MLflow 3 finds runs:/<run>/model through a logged model of the run by this name (or the
# run's model/ folder). The Models tab tells one run's model from another's by its source run.
NAME = "model"
# A metric's split, by its prefix: the data set of that context among the run's inputs is its dataset.
CONTEXTS = {"val_": "validation", "test_": "test"}


def log_or_warn(client: mlflow.MlflowClient, run_id: str, local_dir: Path, step: int) -> str | None:
    """Log ``local_dir`` (a saved MLflow Model) as the run's logged model at ``step``: its id; None,
    with a warning, where it cannot be made (the run's own ``model/`` is then sent instead)."""
    try:
        return log_model(client, client.get_run(run_id), local_dir, step)
    except Exception as error:
        log.warning(
            "MLflow run %s: no logged model (%s); the model goes into the run's files as model/",
            run_id,
            describe(error),
        )
        return None


def register(
    client: mlflow.MlflowClient, run_id: str, source: str, step: int, registered_name: str, alias: str | None
) -> None:
    """A new version of ``registered_name`` from ``source`` (the logged model, else the run's model/),
    described and tagged with the run and its best step, with ``alias`` when given."""
    name = client.get_run(run_id).info.run_name or run_id
    tags = {"run_id": run_id, "run_name": name, "best_step": str(step)}
    version = mlflow.register_model(source, registered_name, tags=tags)
    description = f"Run {name} ({run_id}), the best epoch's weights (step {step})."
    client.update_model_version(registered_name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(registered_name, alias, version.version)


def describe_versions(client: mlflow.MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """The test split's results (``test_*``), measured after the model was registered, added to the
    description and tags of every registered version of the run."""
    measured = {key: float(value) for key, value in metrics.items() if key.startswith("test_") and "." not in key}
    if not measured:
        return
    shown = {key: f"{value:.0f}" if value.is_integer() else f"{value:.4f}" for key, value in measured.items()}
    said = ", ".join(f"{key} {value}" for key, value in sorted(shown.items()))
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        description = (version.description or "").split(" Test split:")[0]
        client.update_model_version(version.name, version.version, description=f"{description} Test split: {said}.")
        for key, value in shown.items():
            client.set_model_version_tag(version.name, version.version, key, value)


def log_model(client: mlflow.MlflowClient, run: Run, local_dir: Path, step: int) -> str:
    """The logged model's id, once its files are uploaded and it is READY. It carries the run's params,
    and its name as the tag ``run_name``."""
    run_id = run.info.run_id
    model = client.create_logged_model(
        run.info.experiment_id,
        name=NAME,
        source_run_id=run_id,
        params=dict(run.data.params),
        tags={"run_name": run.info.run_name or run_id},
        model_type="keras",
    )
    try:
        client.log_model_artifacts(model.model_id, str(local_dir))
    except Exception:
        # Whole or absent: what a failed upload left in a local store goes, and so does the model.
        _remove_local_files(model.artifact_location)
        client.delete_logged_model(model.model_id)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    link_metrics(client, run, model.model_id, step)
    return model.model_id


def of_run(client: mlflow.MlflowClient, run_id: str) -> LoggedModel | None:
    """The run's own logged model: the newest of its outputs named ``model`` that it is the source of
    (none where its model went into its files as model/)."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [client.get_logged_model(output.model_id) for output in outputs]
    own = [model for model in models if model.name == NAME and model.source_run_id == run_id]
    return max(own, key=lambda model: model.creation_timestamp, default=None)


def link_metrics(client: mlflow.MlflowClient, run: Run, model_id: str, step: int) -> None:
    """The run's metrics at ``step`` become the model's too (as MLflow's own log_model does): the same
    points, with the model's id and, for a split's metrics (``val_``), that split's data set."""
    run_id = run.info.run_id
    linked = [
        Metric(point.key, point.value, point.timestamp, point.step, model_id=model_id, run_id=run_id, **split(run, key))
        for key in run.data.metrics
        for point in client.get_metric_history(run_id, key)
        if point.step == step and point.model_id is None
    ]
    if linked:
        client.log_batch(run_id, metrics=linked)


def split(run, key: str) -> dict[str, str]:
    """``dataset_name`` and ``dataset_digest`` of the split a metric was measured on, from the run's
    logged inputs (``val_loss``: the input of context ``validation``); none where it has none."""
    context = next((context for prefix, context in CONTEXTS.items() if key.startswith(prefix)), None)
    for given in run.inputs.dataset_inputs if context and run.inputs else []:
        if any(tag.key == "mlflow.data.context" and tag.value == context for tag in given.tags):
            return {"dataset_name": given.dataset.name, "dataset_digest": given.dataset.digest}
    return {}


def linked_points(client: mlflow.MlflowClient, run_id: str, metrics: Mapping[str, float], timestamp: int) -> list:
    """Metrics measured after training (the test split's) as points of the run's logged model: at its
    step, with its id and their split's data set; plain points at step 0 where it has none."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    if not outputs:
        return [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
    model = outputs[-1]
    return [
        Metric(key, float(value), timestamp, model.step, model_id=model.model_id, run_id=run_id, **split(run, key))
        for key, value in metrics.items()
    ]


def _remove_local_files(artifact_location: str) -> None:
    """A logged model's files in a local artifact store (a server or cloud store writes whole objects)."""
    if artifact_location.startswith(("file:", "/")):
        shutil.rmtree(local_artifact_path(artifact_location), ignore_errors=True)
