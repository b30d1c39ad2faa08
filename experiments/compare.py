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
import json
import re
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from experiments.cli import TrackingStoreError, expand_quoted_option, open_tracking_store, read_run
from experiments.command import override_key, overrides_of
from plugins import tags as tag_names
from plugins.artifacts import FLOAT_FORMAT
from plugins.errors import first_line
from plugins.metric_names import higher_is_better
from plugins.sweep import end_orphaned_sweeps

DEFAULT_EXPERIMENT = OmegaConf.load(
    Path(__file__).resolve().parent.parent / "conf" / "mlflow" / "default.yaml"
).experiment_name
# Params that do not make two runs' training differ: what the regulariser sets (and the model size
# it changes), where the run is logged, the local files of its output folder (a folder per job of a
# sweep) and how much it prints. The monitor stays: it picks the weights the test split is run with.
NOT_SETUP = re.compile(
    r"^(reg\..+|model\.(total|trainable)_params|mlflow\.(?!monitor$|mode$).+|resume|trainer\.verbose"
    r"|callbacks\.\w+\.(log_dir|backup_dir|filename|filepath))$"
)
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
    except (CompareError, TrackingStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scope = f"sweep {parent.info.run_id} ({parent.info.run_name})" if parent else f"experiment {experiment.name}"
    print(
        f"{len(table)} runs of {scope}, sorted by {args.sort_by}; * marks the plain run, "
        "d_ columns the difference from it"
    )
    print(printable(table, args.group_by))
    try:
        files = write_report(client, table, runs, Path(args.output), args.group_by, args.max_curves)
    except OSError as error:  # a folder that cannot be made or written to, a full disk
        print(
            f"error: --output {args.output}: cannot write the report there ({error.strerror}: {error.filename})",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {', '.join(str(file) for file in files)}")
    if parent is not None:
        client.log_artifacts(parent.info.run_id, str(files[0].parent), "comparison")
        print(f"logged them to sweep {parent.info.run_id} as comparison/")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="experiment name (default: conf's mlflow.experiment_name)"
    )
    parser.add_argument(
        "--parent",
        default="latest",
        help="a sweep's parent run id; 'latest' (the newest sweep, else all runs) or 'all'",
    )
    parser.add_argument("--group-by", default="reg", help="run tag that tells the variants apart")
    parser.add_argument("--sort-by", default="test_accuracy", help="column to sort by (best first)")
    parser.add_argument("--output", default="comparison", help="folder for the CSV, Markdown and plots")
    parser.add_argument(
        "--max-curves", type=positive_whole_number, default=20, help="runs drawn in the per-epoch plots"
    )
    parser.add_argument("--tracking-uri", default=None, help="default: MLflow's own resolution")
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
        newest = client.search_runs(
            [experiment_id], "tags.sweep = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
        return newest[0] if newest else None
    run = read_run(client, parent)
    if run is None:
        raise CompareError(f"no run {parent} in {client.tracking_uri}")
    return run


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
    if sort_by not in table:
        raise CompareError(f"--sort-by {sort_by}: expected one of {', '.join(table.columns)}")
    descending = higher_is_better(sort_by)
    return table.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable").reset_index(
        drop=True
    )


def training_setup(run) -> str:
    """How a run was trained, but for its regulariser: its model and training-callback tags (early
    stopping and plateau reduction are compared as rows of their own) and its params but NOT_SETUP."""
    tags = run.data.tags
    setup = {f"tag {name}": tags.get(name) for name in (tag_names.MODEL, tag_names.EARLY_STOPPING, tag_names.REDUCE_LR)}
    setup.update((key, value) for key, value in run.data.params.items() if not NOT_SETUP.match(key))
    return json.dumps(setup, sort_keys=True)


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


def printable(table: pd.DataFrame, group_by: str) -> str:
    shown = table.drop(columns=["run_id", "regularised"]).copy()
    shown.insert(0, "", shown.pop("plain").map({True: "*", False: ""}))
    return shown.to_string(index=False, float_format=lambda value: f"{value:.4g}", na_rep="-")


# ----------------------------------------------------------------------------- report


def write_report(client, table: pd.DataFrame, runs: list, folder: Path, group_by: str, max_curves: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "comparison.csv", index=False, float_format=FLOAT_FORMAT)
    shown = table.drop(columns=["run_id"])
    # tabulate writes its missing value for None only, and pandas hands it NaN ("nan") for both kinds of blank.
    shown = shown.astype(object).where(shown.notna(), None)
    (folder / "comparison.md").write_text(shown.to_markdown(index=False, floatfmt=".4g", missingval="-") + "\n")
    # Per-epoch curves of the plain runs and the best others: more lines than that are unreadable.
    drawn = pd.concat([table[table["plain"]], table[~table["plain"]]]).head(max_curves)
    every_label = curve_labels(table, group_by)  # a run's label is the same whichever runs are drawn
    labels = {run_id: every_label[run_id] for run_id in drawn["run_id"]}
    files = [folder / "comparison.csv", folder / "comparison.md"]
    for key, title in CURVES.items():
        histories = {labels[run_id]: client.get_metric_history(run_id, key) for run_id in labels}
        if key == "learning_rate" and len({p.value for points in histories.values() for p in points}) < 2:
            continue  # one flat line: no rate changed in any run
        files.append(plot_curves(histories, title, key, folder / f"{key}.png"))
    files.append(plot_test_accuracy(drawn, labels, folder / "test_accuracy.png"))
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
