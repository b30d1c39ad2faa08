"""compare --promote NAME: when the study's gate holds, the top run of the best configuration that
helps becomes a new version of the registered model NAME with the alias ``champion``; its
description and tags say what the study found, the run, its configuration and its test accuracy."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException

from experiments import study_report
from experiments.report import Answer, TopPick, top_pick
from plugins.errors import first_line
from plugins.redaction import one_line
from plugins.ui_link import run_page

ALIAS = "champion"


class NotPromoted(Exception):
    """Nothing moved: the message says why."""


def champion_pick(client: mlflow.MlflowClient, answer: Answer, table) -> TopPick:
    """The top run of the best helping configuration and its logged model; NotPromoted where none
    helps or that run has no logged model."""
    best = study_report.best_configuration(answer.verdicts, answer.metric)
    if best is None:
        top = study_report.top_mean_configuration(answer.verdicts, answer.metric)
        raise NotPromoted(f"no configuration helps on {answer.metric} (top mean: {top}, which need not differ)")
    pick = top_pick(client, table, best, answer.metric)
    if pick is None or pick.model_id is None:
        raise NotPromoted(f"{best} helps, but its top run has no logged model to register")
    return pick


def promote(client: mlflow.MlflowClient, answer: Answer, table, parent, name: str) -> str:
    """Register the champion pick as a new version of ``name`` with the alias; the line to print."""
    pick = champion_pick(client, answer, table)
    row = answer.verdicts.set_index("configuration").loc[pick.configuration]
    accuracy = float(table.loc[table["run_id"].eq(pick.run_id), "test_accuracy"].iloc[0])
    found = f"{pick.configuration} {row['verdict']}: {study_report.effect_text(row, answer.metric)}"
    found += f"{' pp' if study_report.in_points(answer.metric) else ''} {answer.metric}, W/T/L "
    found += f"{study_report.record_text(row)} {answer.repeats}"
    where = "its own runs"
    if parent is not None:
        page = run_page(client.tracking_uri, parent.info.experiment_id, parent.info.run_id)
        where = one_line(f"sweep {parent.info.run_id} ({parent.info.run_name}): {page}")
    description = one_line(
        f"Champion by the study of {where}. {found} (Holm-adjusted). Run {pick.run_name} ({pick.run_id}), "
        f"configuration {pick.configuration}, test_accuracy {accuracy:.4f}."
    )
    tags = {
        "run_id": pick.run_id,
        "run_name": one_line(pick.run_name),
        "configuration": pick.configuration,
        "test_accuracy": f"{accuracy:.4f}",
        "study": parent.info.run_id if parent is not None else "",
    }
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            name, f"models:/{pick.model_id}", pick.run_id, tags=tags, description=description, model_id=pick.model_id
        )
        client.set_registered_model_alias(name, ALIAS, version.version)
    except MlflowException as error:
        raise NotPromoted(f"the registry refused it: {first_line(error)}") from None
    return (
        f"promoted: {name} version {version.version} is {name}@{ALIAS}: run {one_line(pick.run_name)} "
        f"({pick.run_id}), {pick.configuration}, test_accuracy {accuracy:.4f}"
    )
