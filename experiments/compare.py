"""Compare runs: did regularisation help, and by how much?

    python -m experiments.compare [--experiment NAME] [--parent RUN_ID|latest|all] [--group-by TAG]
                                  [--sort-by METRIC] [--output DIR] [--max-curves N]

One row per run (from one search, no metric histories), with a column per command-line override
that differs between the runs, printed as an aligned table with the plain run marked and every
run's difference from the plain run trained the same way; written as
comparison.csv and comparison.md with four plots. When the runs belong to a sweep, it all goes onto
the sweep's parent run under comparison/.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from experiments import study, study_report
from experiments.cli import (
    CONFIGURED,
    TRACKING_URI_HELP,
    TrackingStoreError,
    expand_quoted_option,
    open_tracking_store,
    read_run,
)
from experiments.command import override_key, overrides_of
from plugins import tags as tag_names
from plugins.artifacts import FLOAT_FORMAT
from plugins.errors import first_line
from plugins.metric_names import higher_is_better
from plugins.redaction import one_line
from plugins.sweep import end_orphaned_sweeps

DEFAULT_EXPERIMENT = CONFIGURED.experiment_name
# Params that do not make two runs' training differ: what the regulariser sets (and the model size
# it changes), where the run is logged, the local files of its output folder (a folder per job of a
# sweep) and how much it prints. The monitor stays: it picks the weights the test split is run with.
NOT_SETUP = re.compile(
    r"^(reg\..+|model\.(total|trainable)_params|mlflow\.(?!monitor$|mode$).+|resume|trainer\.verbose"
    r"|callbacks\.\w+\.(log_dir|backup_dir|filename|filepath))$"
)
JUDGED = ("test_accuracy", "best_val_loss", "test_loss")  # the differences from plain a study reports
CURVES = {
    "val_loss": "validation loss",
    "gap_loss": "generalisation gap (val_loss - loss)",
    "learning_rate": "learning rate",
}


class CompareError(Exception):
    """Something the user must fix; printed as one line."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(expand_quoted_option(sys.argv[1:] if argv is None else argv, "--options"))
    try:
        client = open_tracking_store(args.tracking_uri)
        experiment = find_experiment(client, args.experiment)
        end_orphaned_sweeps(client, experiment.experiment_id)  # a sweep whose driver died is not running
        parent = find_parent(client, experiment.experiment_id, args.parent)
        runs = find_runs(client, experiment.experiment_id, parent)
        table = comparison_table(runs, args.group_by, args.sort_by)
        answer = Answer.of(table, args.sort_by)
        requirements = [study_report.parse_requirement(text, answer.verdicts) for text in args.require]
    except (CompareError, TrackingStoreError, study_report.RequirementError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scope = f"sweep {parent.info.run_id} ({parent.info.run_name})" if parent else f"experiment {experiment.name}"
    scope = one_line(scope)  # names read back from the store
    print(f"{len(table)} runs of {scope} in {len(answer.verdicts)} configurations")
    print(answer.printable())
    print(f"\nper run, sorted by {args.sort_by}; * marks the plain run, d_ columns the difference from it:")
    print(printable(table, args.group_by))
    try:
        files = write_report(client, table, answer, runs, Path(args.output), args.group_by, args.max_curves)
    except OSError as error:  # a folder that cannot be made or written to, a full disk
        print(
            f"error: --output {args.output}: cannot write the report there ({error.strerror}: {error.filename})",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {', '.join(str(file) for file in files)}")
    if parent is not None:
        client.log_artifacts(parent.info.run_id, str(files[0].parent), "comparison")
        answer.describe(client, parent.info.run_id)
        print(f"logged them to sweep {parent.info.run_id} as comparison/, with the answer as its description")
    failed = [why for requirement in requirements if (why := study_report.judge(requirement, answer.verdicts))]
    for why in failed:
        print(f"requirement not met: {why}", file=sys.stderr)
    return 1 if failed else 0


@dataclass(frozen=True)
class Answer:
    """A study's verdicts on ``metric`` (and the differences in ``compared``) and how to show them."""

    verdicts: pd.DataFrame
    metric: str
    compared: list[str]
    repeats: str

    @classmethod
    def of(cls, table: pd.DataFrame, sort_by: str) -> Answer:
        """Judged on --sort-by where it is a metric, else on test_accuracy."""
        metric = sort_by if sort_by in JUDGED else "test_accuracy"
        compared = [metric, *(column for column in JUDGED if column != metric)]
        return cls(study.verdict_table(table, metric, compared), metric, compared, study_report.repeat_word(table))

    def printable(self) -> str:
        rows = study_report.verdict_rows(self.verdicts, self.metric, self.compared, self.repeats)
        rows["configuration"] = rows["configuration"].map(lambda label: study_report.shortened(label, 30))
        droppable = [column for column in rows if column.startswith("Δ ") and self.metric not in column.split()[1:2]]
        text, left_out = study_report.fitted(rows, [*reversed(droppable), "repeats to resolve", f"mean {self.metric}"])
        headline = textwrap.fill(study_report.headline(self.verdicts, self.metric, self.repeats), study_report.WIDTH)
        more = f"\n({', '.join(left_out)}: in verdicts.csv)" if left_out else ""
        return f"{headline}\n{text}{more}"

    def write(self, folder: Path) -> list[Path]:
        """verdicts.csv (every number), verdicts.md (as the parent's description) and effects.png."""
        self.verdicts.to_csv(folder / "verdicts.csv", index=False, float_format=FLOAT_FORMAT)
        text = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats)
        (folder / "verdicts.md").write_text(text)
        effects = study_report.plot_effects(self.verdicts, self.metric, self.repeats, folder / "effects.png")
        return [folder / "verdicts.csv", folder / "verdicts.md", effects]

    def plot_mean_curves(self, client, table: pd.DataFrame, path: Path, most: int) -> Path:
        """val_loss and the fair gap (gap_loss_eval, or gap_loss for runs without diagnostics) of each
        regularised configuration (the first ``most``) beside its plain configuration's."""
        keys = ("val_loss", "gap_loss_eval" if table["gap_loss_eval"].notna().any() else "gap_loss")
        runs_of = table.groupby("configuration", sort=False)["run_id"].apply(list)
        cache: dict[str, dict[str, study_report.Curve]] = {}

        def curves(configuration: str) -> dict[str, study_report.Curve]:
            if configuration not in cache:
                cache[configuration] = {
                    key: study_report.mean_curve(
                        [client.get_metric_history(run, key) for run in runs_of[configuration]]
                    )
                    for key in keys
                }
            return cache[configuration]

        panels = []
        for configuration in list(self.verdicts.loc[~self.verdicts["plain"], "configuration"])[:most]:
            setup = table.loc[table["configuration"].eq(configuration), "setup"].iloc[0]
            partner = table.loc[table["plain"] & table["setup"].eq(setup), "configuration"]
            plain = curves(partner.iloc[0]) if len(partner) else {}
            panels.append(study_report.Panel(configuration, curves(configuration), plain))
        return study_report.plot_mean_curves(panels, self.repeats, path)

    def describe(self, client: mlflow.MlflowClient, parent_run_id: str) -> None:
        """The parent's Overview page: the answer as its description, metrics a chart can use and
        the best configuration as a tag."""
        metrics = study_report.parent_metrics(self.verdicts, self.metric)
        note = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats)
        tags = [RunTag(tag_names.NOTE, study_report.within(note, MAX_TAG_VAL_LENGTH))]
        best = study_report.best_configuration(self.verdicts, self.metric)
        if best is not None:
            tags.append(RunTag(tag_names.BEST_CONFIGURATION, best))
        now = int(time.time() * 1000)
        client.log_batch(
            parent_run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()], tags=tags
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="experiment name (default: conf's mlflow.experiment_name)"
    )
    parser.add_argument(
        "--parent",
        default="latest",
        help="a sweep's parent run id; 'latest' (your newest sweep, else all runs) or 'all'",
    )
    parser.add_argument("--group-by", default="reg", help="run tag that tells the variants apart")
    parser.add_argument("--sort-by", default="test_accuracy", help="column to sort by (best first)")
    parser.add_argument("--output", default="comparison", help="folder for the CSV, Markdown and plots")
    parser.add_argument(
        "--max-curves", type=positive_whole_number, default=20, help="runs drawn in the per-epoch plots"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=TRACKING_URI_HELP,
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="'CONFIG: d_METRIC >= X'",
        help="exit 1 unless the 95%% interval of CONFIG's difference from plain is >= X (lower bound) or "
        "<= X (upper bound); may be given several times",
    )
    return parser.parse_args(argv)


def positive_whole_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def report_to_parent(parent_run_id: str, tracking_uri: str | None, folder: Path) -> None:
    """Compare a sweep's children into ``folder`` and log the report on its parent (the sweep
    callback's hook)."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment(client.get_run(parent_run_id).info.experiment_id)
    main(
        ["--parent", parent_run_id, "--experiment", experiment.name, "--output", str(folder)]
        + ["--tracking-uri", client.tracking_uri]
    )


# ----------------------------------------------------------------------------- runs


def find_experiment(client: mlflow.MlflowClient, name: str):
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as error:
        raise CompareError(f"cannot read the tracking store {client.tracking_uri}: {first_line(error)}") from None
    if experiment is None:
        raise CompareError(f"no experiment named {name!r} in {client.tracking_uri}")
    return experiment


def find_parent(client: mlflow.MlflowClient, experiment_id: str, parent: str):
    """The sweep parent run to compare the children of; None to compare every top-level run."""
    if parent == "all":
        return None
    if parent == "latest":
        query = "tags.sweep = 'true'"
        user = current_user(client.tracking_uri)
        if "'" not in user:  # (a quote would end the filter's string)
            query += f" and tags.`mlflow.user` = '{user}'"
        newest = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
        return newest[0] if newest else None
    run = read_run(client, parent)
    if run is None:
        raise CompareError(f"no run {parent} in {client.tracking_uri}")
    return run


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
        "gap_loss": metrics.get("gap_loss"),
        "gap_accuracy": metrics.get("gap_accuracy"),
        "gap_loss_eval": metrics.get("gap_loss_eval"),
        "lr_changes": metrics.get("lr_changes"),
        "duration_s": (end - run.info.start_time) / 1000 if end else None,
    }


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
                *(f"{key}={row[key]}" for key in varying if pd.notna(row[key])),
            ]
        )
        for _, row in table.iterrows()
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


# ----------------------------------------------------------------------------- report


def write_report(
    client, table: pd.DataFrame, answer: Answer, runs: list, folder: Path, group_by: str, max_curves: int
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # setup (how each was trained, as JSON) is what configuration says in words: not in the files.
    table.drop(columns=["setup"]).to_csv(folder / "comparison.csv", index=False, float_format=FLOAT_FORMAT)
    files = [folder / "comparison.csv", folder / "comparison.md", *answer.write(folder)]
    shown = table.drop(columns=["run_id", "setup"])
    # tabulate writes its missing value for None only, and pandas hands it NaN ("nan") for both kinds of blank.
    shown = shown.astype(object).where(shown.notna(), None)
    (folder / "comparison.md").write_text(shown.to_markdown(index=False, floatfmt=".4g", missingval="-") + "\n")
    # Per-epoch curves of the plain runs and the best others: more lines than that are unreadable.
    drawn = pd.concat([table[table["plain"]], table[~table["plain"]]]).head(max_curves)
    every_label = curve_labels(table, group_by)  # a run's label is the same whichever runs are drawn
    labels = {run_id: every_label[run_id] for run_id in drawn["run_id"]}
    for key, title in CURVES.items():
        histories = {labels[run_id]: client.get_metric_history(run_id, key) for run_id in labels}
        if key == "learning_rate" and len({p.value for points in histories.values() for p in points}) < 2:
            continue  # one flat line: no rate changed in any run
        files.append(plot_curves(histories, title, key, folder / f"{key}.png"))
    files.append(plot_test_accuracy(drawn, labels, folder / "test_accuracy.png"))
    files.append(answer.plot_mean_curves(client, table, folder / "mean_curves.png", max_curves))
    return files


def curve_labels(table: pd.DataFrame, group_by: str) -> dict[str, str]:
    """Each run's legend label, by run id: its name, group and the overrides that vary between the
    runs (comparison_table's attrs["swept"]); runs that share all those (repeats of one config) get
    the start of their run id too, so none hides another's curve or bar."""
    labels = {
        row.run_id: " ".join(
            [
                row.run if pd.isna(row[group_by]) else f"{row.run} ({row[group_by]})",
                *(f"{key}={row[key]}" for key in table.attrs.get("swept", ()) if pd.notna(row[key])),
            ]
        )
        for _, row in table.iterrows()
    }
    shared = {label for label, count in Counter(labels.values()).items() if count > 1}
    return {run_id: f"{label} {run_id[:8]}" if label in shared else label for run_id, label in labels.items()}


def plot_curves(histories: dict[str, list], title: str, key: str, path: Path) -> Path:
    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for label, points in histories.items():
        points = sorted(points, key=lambda point: point.step)
        axes.plot([p.step for p in points], [p.value for p in points], marker="o", markersize=2, label=label)
    axes.set(title=title, xlabel="epoch", ylabel=key)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if key == "learning_rate" and all(p.value > 0 for points in histories.values() for p in points):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if histories:
        axes.legend(fontsize=7, ncol=2)
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.92)
    figure.savefig(path, dpi=80)
    return path


def plot_test_accuracy(drawn: pd.DataFrame, labels: dict[str, str], path: Path) -> Path:
    """One bar per run, its value written on it, the axis zoomed to the values: bars from 0 would
    make 0.970 and 0.978 look the same."""
    figure = Figure(figsize=(8, 1.2 + 0.35 * max(len(drawn), 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    values = drawn["test_accuracy"]
    colours = ["tab:orange" if plain else "tab:blue" for plain in drawn["plain"]]
    names = [labels[run_id] for run_id in drawn["run_id"]]
    bars = axes.barh(names, values.fillna(0), color=colours)
    axes.bar_label(bars, labels=[f"{value:.3f}" if pd.notna(value) else "-" for value in values], padding=3, fontsize=8)
    known = values.dropna()
    if len(known):
        low, high = float(known.min()), float(known.max())
        margin = max(high - low, 0.005) * 0.6
        axes.set_xlim(max(0.0, low - margin), min(1.0, high + margin) + margin)  # room for the labels
    axes.invert_yaxis()  # the table's order, top to bottom
    axes.set(title="test accuracy (orange: plain)", xlabel="test_accuracy (axis zoomed to the values)")
    axes.tick_params(axis="y", labelsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.subplots_adjust(
        left=0.35, right=0.98, bottom=0.8 / figure.get_figheight(), top=1 - 0.4 / figure.get_figheight()
    )
    figure.savefig(path, dpi=80)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
