"""The runs a comparison reads and its table: one row per run, the plain run marked, each run's
configuration, setup and repeat, and the difference from the plain run trained the same way."""

from __future__ import annotations

import getpass
import json
import re
import textwrap
from collections import Counter

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds

from experiments import study, study_report
from experiments.cli import read_run
from experiments.command import override_key, overrides_of
from plugins import tags as tag_names
from plugins.errors import first_line
from plugins.metric_names import higher_is_better

# Params that do not make two runs' training differ: what the regulariser sets (and the model size
# it changes), where the run is logged, the local files of its output folder (a folder per job of a
# sweep), how much it prints and the versions of Keras and its backend. The monitor stays: it picks
# the weights the test split is run with; so does the backend: runs on two backends are not paired.
NOT_SETUP = re.compile(
    r"^(reg\..+|model\.(total|trainable)_params|keras\.(version|backend_version)|mlflow\.(?!monitor$|mode$).+|resume"
    r"|trainer\.verbose"
    r"|callbacks\.\w+\.(log_dir|backup_dir|filename|filepath))$"
)


class CompareError(Exception):
    """Something the user must fix; printed as one line."""


# ----------------------------------------------------------------------------- the runs


def find_experiment(client: mlflow.MlflowClient, name: str):
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as error:
        raise CompareError(f"cannot read the tracking store {client.tracking_uri}: {first_line(error)}") from None
    if experiment is None:
        raise CompareError(f"no experiment named {name!r} in {client.tracking_uri}")
    return experiment


def find_study(client: mlflow.MlflowClient, experiment_name: str | None, parent: str, default_experiment: str):
    """(experiment, sweep parent run or None to compare every top-level run) for ``--parent``: a run
    id (in its own experiment), ``all``, or ``latest``: your newest sweep in ``experiment_name``, or
    where none is given, in every experiment; without a sweep, the runs of the experiment."""
    if parent not in ("latest", "all"):
        run = read_run(client, parent)
        if run is None:
            raise CompareError(f"no run {parent} in {client.tracking_uri}")
        experiment = client.get_experiment(run.info.experiment_id)
        if experiment_name is not None and experiment.name != experiment_name:
            raise CompareError(f"run {parent} is in experiment {experiment.name!r}, not {experiment_name!r}")
        return experiment, run
    named = find_experiment(client, experiment_name) if experiment_name is not None else None
    if parent == "latest":
        newest = newest_sweep(client, [named.experiment_id] if named else every_experiment(client))
        if newest is not None:
            return client.get_experiment(newest.info.experiment_id), newest
    return named or find_experiment(client, default_experiment), None


def every_experiment(client: mlflow.MlflowClient) -> list[str]:
    try:
        return [experiment.experiment_id for experiment in client.search_experiments(max_results=50000)]
    except MlflowException as error:
        raise CompareError(f"cannot read the tracking store {client.tracking_uri}: {first_line(error)}") from None


def newest_sweep(client: mlflow.MlflowClient, experiment_ids: list[str]):
    """Your newest sweep parent (``mlflow.user``) in these experiments; None where there is none."""
    query = f"tags.{tag_names.SWEEP} = 'true'"
    user = current_user(client.tracking_uri)
    if "'" not in user:  # (a quote would end the filter's string)
        query += f" and tags.`mlflow.user` = '{user}'"
    newest = client.search_runs(experiment_ids, query, order_by=["attributes.start_time DESC"], max_results=1)
    return newest[0] if newest else None


def current_user(uri: str) -> str:
    """Who runs this, as MLflow records a run's ``mlflow.user``: the user signed in to a tracking
    server (MLFLOW_TRACKING_USERNAME, which a server with MLflow's auth records), else the login."""
    credentials = get_default_host_creds(uri) if uri.startswith(("http://", "https://")) else None
    return (credentials and credentials.username) or getpass.getuser()


def find_runs(client: mlflow.MlflowClient, experiment_id: str, parent) -> list:
    query = f"tags.{tag_names.PARENT_RUN} = '{parent.info.run_id}'" if parent else ""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=5000, page_token=token)
        runs.extend(run for run in page if run.data.tags.get(tag_names.SWEEP) != "true")
        token = page.token
        if not token:
            break
    if not runs:
        where = f"sweep {parent.info.run_id}" if parent else f"experiment {experiment_id}"
        raise CompareError(f"{where} has no runs to compare")
    return runs


# ----------------------------------------------------------------------------- table


def at_best_epoch(metrics: dict, key: str) -> float | None:
    """A validation metric at the best epoch: best_<monitor> for the monitored one, <key>_at_best otherwise."""
    return metrics.get(f"best_{key}", metrics.get(f"{key}_at_best"))


def run_row(run, group_by: str) -> dict:
    metrics, tags = run.data.metrics, run.data.tags
    end = run.info.end_time
    described = {"model": tags.get(tag_names.MODEL), "reg": tags.get(tag_names.REG)}
    described.setdefault(group_by, tags.get(group_by))  # a tag of its own gets a column beside them
    return {
        "run": tags.get("mlflow.runName", run.info.run_id[:8]),
        "run_id": run.info.run_id,
        "status": run.info.status,
        **described,
        "regularised": tags.get(tag_names.REGULARISED),
        "early_stopping": tags.get(tag_names.EARLY_STOPPING),
        "reduce_lr": tags.get(tag_names.REDUCE_LR),
        "epochs": metrics.get("epochs_run"),
        "stopped_epoch": metrics.get("stopped_epoch"),
        "best_epoch": metrics.get("best_epoch"),
        "best_val_loss": at_best_epoch(metrics, "val_loss"),
        "best_val_accuracy": at_best_epoch(metrics, "val_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "test_accuracy": metrics.get("test_accuracy"),
        # Keras' losses hold the L1/L2 penalty; a comparison of regularisers compares the data's part.
        "best_val_data_loss": _less(at_best_epoch(metrics, "val_loss"), metrics.get("penalty_loss_at_best")),
        "test_data_loss": metrics.get("test_data_loss"),
        "test_examples": metrics.get("test_examples"),
        "gap_loss": metrics.get("gap_loss"),
        "gap_accuracy": metrics.get("gap_accuracy"),
        "gap_loss_eval": metrics.get("gap_loss_eval"),
        "lr_changes": metrics.get("lr_changes"),
        "duration_s": (end - run.info.start_time) / 1000 if end else None,
        "budget": _number(run.data.params.get("trainer.epochs")),  # the epochs asked for
        "folds": _number(run.data.params.get("data.folds")),
    }


def _less(value: float | None, penalty: float | None) -> float | None:
    return value - penalty if value is not None and penalty is not None else None


def _number(text: str | None) -> float | None:
    """A param as a number; None where it is absent or no number (data read back from the store)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def comparison_table(runs: list, group_by: str, sort_by: str) -> pd.DataFrame:
    """One row per run, best first, with the plain run marked and the difference from it."""
    check_group_by(runs, group_by)
    table = pd.DataFrame([run_row(run, group_by) for run in runs])
    swept = varying_overrides(runs, shown=table.columns)
    for position, key in enumerate(swept, start=table.columns.get_loc("regularised")):
        table.insert(position, key, swept[key])
    table.attrs["swept"] = list(swept)  # for the curves' labels
    numbers = [
        "epochs",
        "stopped_epoch",
        "best_epoch",
        "best_val_loss",
        "best_val_accuracy",
        "test_loss",
        "test_accuracy",
        "gap_loss",
        "gap_accuracy",
        "gap_loss_eval",
        "lr_changes",
        "duration_s",
        "best_val_data_loss",
        "test_data_loss",
        "test_examples",
        "budget",
        "folds",
    ]
    table[numbers] = table[numbers].astype(float)  # None -> NaN, printed as "-"
    table["plain"] = table["regularised"].eq("false")
    # The plain run to measure against was trained the same way, so a difference is the regulariser's
    # alone: in a sweep of reg=none,l2 optimizer=adam,sgd, l2 with sgd against plain with sgd.
    keys = pd.Series([training_setup(run) for run in runs])
    for metric in ("test_accuracy", "best_val_loss"):
        plain = table[table["plain"]].groupby(keys[table["plain"]])[metric].mean()
        table[f"d_{metric}"] = table[metric] - keys.map(plain)
    add_configurations(table, runs, group_by)
    if sort_by not in table:
        raise CompareError(f"--sort-by {sort_by}: expected one of {', '.join(table.columns)}")
    descending = higher_is_better(sort_by)
    return table.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable").reset_index(
        drop=True
    )


def training_setup(run, leaving_out: tuple[str, ...] = ()) -> str:
    """How a run was trained, but for its regulariser: its model and training-callback tags (early
    stopping and plateau reduction are compared as rows of their own) and its params but NOT_SETUP
    and ``leaving_out``."""
    tags = run.data.tags
    setup = {f"tag {name}": tags.get(name) for name in (tag_names.MODEL, tag_names.EARLY_STOPPING, tag_names.REDUCE_LR)}
    setup.update(
        (key, value) for key, value in run.data.params.items() if not NOT_SETUP.match(key) and key not in leaving_out
    )
    return json.dumps(setup, sort_keys=True)


def add_configurations(table: pd.DataFrame, runs: list, group_by: str) -> None:
    """Columns that make runs repeats of a configuration: ``setup`` (how it was trained but for its
    regulariser, seed and fold), ``repeat`` (its seed and fold) and ``configuration``, a label: its
    group and the overrides that vary but for seed and fold (``l2 callbacks=basic``)."""
    table["setup"] = [training_setup(run, leaving_out=study.REPEAT_KEYS) for run in runs]
    table["repeat"] = [json.dumps([run.data.params.get(key) for key in study.REPEAT_KEYS]) for run in runs]
    varying = [key for key in table.attrs["swept"] if key not in study.REPEAT_KEYS]
    labels = [
        " ".join(
            [
                str(row[group_by]) if pd.notna(row[group_by]) else f"no {group_by} tag",
                *backend_label(run),
                *(f"{key}={row[key]}" for key in varying if pd.notna(row[key])),
            ]
        )
        for run, (_, row) in zip(runs, table.iterrows())
    ]
    identities = list(zip(table[group_by].astype(str), table["setup"]))
    # Two configurations trained differently in a way no override shows get the same label: number them.
    numbered: dict[tuple, str] = {}
    uses: Counter = Counter()
    for label, identity in zip(labels, identities):
        if identity not in numbered:
            uses[label] += 1
            numbered[identity] = label if uses[label] == 1 else f"{label} #{uses[label]}"
    table["configuration"] = [numbered[identity] for identity in identities]


def backend_label(run) -> list[str]:
    """``(jax)`` for a run not trained on TensorFlow, as in run names: runs of two backends are two
    configurations, and their labels say which is which."""
    backend = run.data.params.get("keras.backend", "tensorflow")
    return [] if backend == "tensorflow" else [f"({backend[:20]})"]


def varying_overrides(runs: list, shown) -> pd.DataFrame:
    """A column per command-line override that is not the same for every run and is not ``shown``
    yet, e.g. ``optimizer`` in a sweep of reg=none,l2 optimizer=adam,sgd (missing: not overridden)."""
    overrides = [job_overrides(run) for run in runs]
    keys = dict.fromkeys(key for given in overrides for key in given if key not in shown)
    varying = [key for key in keys if len({given.get(key) for given in overrides}) > 1]
    return pd.DataFrame([{key: given.get(key) for key in varying} for given in overrides], columns=varying)


def job_overrides(run) -> dict[str, str]:
    """The overrides a run was trained with, by key (``optimizer``, ``trainer.seed``), read from the
    runner's reproduce.command tag; none for a run the runner did not make."""
    overrides = overrides_of(run.data.tags.get(tag_names.REPRODUCE_COMMAND, ""))
    return {override_key(override): override.partition("=")[2] for override in overrides}


def check_group_by(runs: list, group_by: str) -> None:
    """A tag no run has would make a column of blanks: a typo, most likely."""
    if any(group_by in run.data.tags for run in runs):
        return
    tags = sorted({key for run in runs for key in run.data.tags if not key.startswith("mlflow.")})
    raise CompareError(f"--group-by {group_by}: no run has that tag; the runs' tags: {', '.join(tags)}")


# Left out of the printed per-run table, in this order, until it fits (comparison.csv has them all).
DROPPABLE = [
    "folds",
    "budget",
    "test_examples",
    "best_val_data_loss",
    "test_data_loss",
    "lr_changes",
    "stopped_epoch",
    "gap_accuracy",
    "best_val_accuracy",
    "test_loss",
    "duration_s",
    "early_stopping",
    "reduce_lr",
    "model",
    "gap_loss",
    "status",
    "best_epoch",
]


def printable(table: pd.DataFrame, group_by: str) -> str:
    """The per-run table, at most study_report.WIDTH wide: what is the same for every run in a line
    above it, then a column for each of the rest while they fit."""
    shown = table.drop(columns=["run_id", "regularised", "setup", "repeat", "configuration"])
    shown.insert(0, "", shown.pop("plain").map({True: "*", False: ""}))
    shown["run"] = shown["run"].map(lambda name: study_report.shortened(str(name), 32))
    shown = shown.astype(object).map(as_text)
    same = [column for column in shown.columns[2:] if len(shown) > 1 and shown[column].nunique() == 1]
    text, left_out = study_report.fitted(shown.drop(columns=same), DROPPABLE)
    values = ", ".join(f"{column}={shown[column].iloc[0]}" for column in same if shown[column].iloc[0] != "-")
    header = textwrap.fill(f"the same for every run: {values}", study_report.WIDTH) + "\n" if same else ""
    more = f"\n({', '.join(left_out)}: in comparison.csv)" if left_out else ""
    return header + text + more


def as_text(value) -> str:
    if isinstance(value, float):
        return "-" if pd.isna(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
