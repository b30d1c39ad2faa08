"""The comparison's report: the study's answer (verdicts.csv, verdicts.md, the parent's Overview),
comparison.csv and comparison.md, and the figures, written into one folder."""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from experiments import figures, study, study_report
from plugins import tags as tag_names
from plugins.artifacts import FLOAT_FORMAT

ACCURACY = "test_accuracy"
DATA_LOSSES = ("best_val_data_loss", "test_data_loss")  # Keras' losses less the L1/L2 penalty
KERAS_LOSSES = ("best_val_loss", "test_loss")  # for runs that did not measure the penalty
CURVES = {
    "val_loss": "validation loss",
    "gap_loss": "generalisation gap (val_loss - loss)",
    "learning_rate": "learning rate",
}


@dataclass(frozen=True)
class Answer:
    """A study's verdicts on ``metric`` (and the differences in ``compared``) and how to show them."""

    verdicts: pd.DataFrame
    metric: str
    compared: list[str]
    repeats: str
    margin: str  # as the table shows it: "0.5 pp"
    notes: list[str]  # what the intervals are and what limits the answer, a line each
    resolution: float | None  # the metric's smallest step on the test split (1 / examples), if known

    @classmethod
    def of(cls, table: pd.DataFrame, sort_by: str, margin: float | None, accuracy_margin: float) -> Answer:
        """Judged on --sort-by where it is a metric compared, else on test_accuracy. ``margin`` is in
        percentage points for an accuracy and in the metric's own units otherwise; None: the
        ``accuracy_margin`` for an accuracy, and none (0) for a loss."""
        losses = DATA_LOSSES if table[DATA_LOSSES[1]].notna().any() else KERAS_LOSSES
        candidates = (ACCURACY, *losses)
        metric = dict(zip(KERAS_LOSSES, losses)).get(sort_by, sort_by)
        metric = metric if metric in candidates else ACCURACY
        compared = [metric, *(column for column in candidates if column != metric)]
        examples = table["test_examples"].max()
        resolution = {ACCURACY: 1 / examples} if examples > 0 else {}
        in_points = study_report.in_points(metric)
        margin = margin if margin is not None else accuracy_margin if in_points else 0.0
        design = study.design_of(table)
        judged_with = study.Study(design, margin / 100 if in_points else margin, resolution)
        verdicts = study.verdict_table(table, metric, compared, judged_with)
        shown_margin = f"{margin:g} pp" if in_points else f"{margin:g}"
        notes = answer_notes(table, verdicts, design, examples, losses)
        return cls(verdicts, metric, compared, design.repeat_word, shown_margin, notes, resolution.get(metric))

    def printable(self) -> str:
        rows = study_report.verdict_rows(self.verdicts, self.metric, self.compared, self.repeats)
        rows["configuration"] = rows["configuration"].map(lambda label: study_report.shortened(label, 30))
        droppable = [column for column in rows if column.startswith("Δ ") and self.metric not in column.split()[1:2]]
        text, left_out = study_report.fitted(rows, [*reversed(droppable), "repeats to resolve", f"mean {self.metric}"])
        said = study_report.headline(self.verdicts, self.metric, self.repeats, self.margin)
        headline = textwrap.fill(said, study_report.WIDTH)
        notes = "\n".join(textwrap.fill(note, study_report.WIDTH) for note in self.notes)
        more = f"\n({', '.join(left_out)}: in verdicts.csv)" if left_out else ""
        return f"{headline}\n{text}{more}\n{notes}"

    def write(self, folder: Path) -> list[Path]:
        """verdicts.csv (every number), verdicts.md (as the parent's description) and effects.png."""
        self.verdicts.to_csv(folder / "verdicts.csv", index=False, float_format=FLOAT_FORMAT)
        text = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats, self.margin, self.notes)
        (folder / "verdicts.md").write_text(text)
        effects = figures.plot_effects(self.verdicts, self.metric, self.repeats, folder / "effects.png")
        return [folder / "verdicts.csv", folder / "verdicts.md", effects]

    def plot_mean_curves(self, client, table: pd.DataFrame, path: Path, most: int) -> Path:
        """val_loss and the fair gap (gap_loss_eval, or gap_loss for runs without diagnostics) of each
        regularised configuration (the first ``most``) beside its plain configuration's."""
        keys = ("val_loss", "gap_loss_eval" if table["gap_loss_eval"].notna().any() else "gap_loss")
        runs_of = table.groupby("configuration", sort=False)["run_id"].apply(list)
        cache: dict[str, dict[str, figures.Curve]] = {}

        def curves(configuration: str) -> dict[str, figures.Curve]:
            if configuration not in cache:
                cache[configuration] = {
                    key: figures.mean_curve([client.get_metric_history(run, key) for run in runs_of[configuration]])
                    for key in keys
                }
            return cache[configuration]

        panels = []
        for configuration in list(self.verdicts.loc[~self.verdicts["plain"], "configuration"])[:most]:
            setup = table.loc[table["configuration"].eq(configuration), "setup"].iloc[0]
            partner = table.loc[table["plain"] & table["setup"].eq(setup), "configuration"]
            plain = curves(partner.iloc[0]) if len(partner) else {}
            panels.append(figures.Panel(configuration, curves(configuration), plain))
        return figures.plot_mean_curves(panels, self.repeats, path)

    def describe(self, client: mlflow.MlflowClient, parent_run_id: str, runs: list) -> None:
        """The parent's Overview page: the answer as its description, metrics a chart can use, and
        as tags the best helping configuration, or where none helps, the one with the top mean.
        Each metric's point is at step = runs compared, stamped with the newest run's end: the
        same runs give the same point, which the store keeps once, however often compare runs."""
        metrics = study_report.parent_metrics(self.verdicts, self.metric, self.resolution)
        note = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats, self.margin, self.notes)
        tags = [RunTag(tag_names.NOTE, study_report.within(note, MAX_TAG_VAL_LENGTH))]
        best = study_report.best_configuration(self.verdicts, self.metric)
        top = study_report.top_mean_configuration(self.verdicts, self.metric)
        if best is not None:
            tags.append(RunTag(tag_names.BEST_CONFIGURATION, best))
        elif top is not None:
            tags.append(RunTag(tag_names.TOP_MEAN_CONFIGURATION, top))
        stamp = max(run.info.end_time or run.info.start_time for run in runs)
        client.log_batch(
            parent_run_id, metrics=[Metric(key, value, stamp, len(runs)) for key, value in metrics.items()], tags=tags
        )


def answer_notes(
    table: pd.DataFrame, verdicts: pd.DataFrame, design: study.Design, examples: float, losses: tuple
) -> list[str]:
    """What the intervals are and what limits the answer, a line each."""
    compared = int(verdicts["p"].notna().sum()) if "p" in verdicts else 0
    what = "training randomness on this split and test set" if not design.folds else "the training data's folds"
    notes = [
        f"{design.name} intervals over {what}, paired by seed and fold; Holm-adjusted over {compared} "
        f"comparison{'s' if compared != 1 else ''} (each interval at the level Holm's step judged it at; "
        "the 95% ones are the _unadjusted columns of verdicts.csv)"
    ]
    if examples > 0:
        notes.append(f"test split: {int(examples)} examples, 1 example = {100 / examples:.2f} pp")
    if losses == KERAS_LOSSES:
        notes.append("losses: Keras' own, which hold the L1/L2 penalty (these runs did not measure it)")
    else:
        notes.append("losses: the data's part, Keras' loss less the L1/L2 penalty")
    budget = table["budget"].mode()
    late = table["best_epoch"] >= table["budget"] - np.ceil(table["budget"] / 10)
    if len(budget) and late.mean() > 0.5:
        notes.append(
            f"still improving at the end: most runs' best epoch is in the last tenth of their epochs; "
            f"the verdict is about {int(budget.iloc[0])} epochs of training"
        )
    return notes


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
        files.append(figures.plot_curves(histories, title, key, folder / f"{key}.png"))
    files.append(figures.plot_test_accuracy(drawn, labels, folder / "test_accuracy.png"))
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
