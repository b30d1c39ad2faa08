"""The comparison's report: the study's answer (verdicts.csv, verdicts.md, the parent's Overview),
comparison.csv and comparison.md, and the figures, written into one folder."""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from experiments import figures, study, study_report
from plugins import tags as tag_names
from plugins.artifacts import FLOAT_FORMAT

JUDGED = ("test_accuracy", "best_val_loss", "test_loss")  # the differences from plain a study reports
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
