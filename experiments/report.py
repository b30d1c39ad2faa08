"""The comparison's report: the study's answer (verdicts.csv, verdicts.md, the parent's Overview),
comparison.csv and comparison.md, and the figures, written into one folder."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from experiments import figures, study, study_report
from experiments.class_effects import write_class_effects
from plugins import tags as tag_names
from plugins.artifacts import FLOAT_FORMAT
from plugins.metric_names import higher_is_better

IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a run's or a logged model's id
ACCURACY = "test_accuracy"
DATA_LOSSES = ("best_val_data_loss", "test_data_loss")  # Keras' losses less the L1/L2 penalty
KERAS_LOSSES = ("best_val_loss", "test_loss")  # for runs that did not measure the penalty
# The curves drawn (file name: metric and title); the gap is the fair one where the runs measured
# it: Keras' val_loss - loss shrinks under dropout by construction (docs/studies.md).
CURVES = {
    "val_loss": ("val_loss", "validation loss"),
    "gap_loss": ("gap_loss_eval", "generalisation gap, gap_loss_eval = val_loss - train_eval_loss"),
    "learning_rate": ("learning_rate", "learning rate"),
}
KERAS_GAP = ("gap_loss", "generalisation gap, gap_loss = val_loss - loss (Keras' own, runs without diagnostics)")


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
        """verdicts.csv (every number), verdicts.md (as the parent's description) and effects.png (.svg)."""
        self.verdicts.to_csv(folder / "verdicts.csv", index=False, float_format=FLOAT_FORMAT)
        text = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats, self.margin, self.notes)
        (folder / "verdicts.md").write_text(text)
        position = {name: i for i, name in enumerate(self.verdicts["configuration"])}
        by_effect = self.verdicts.iloc[[position[name] for name in self.by_effect()]]
        effects = figures.plot_effects(by_effect, self.metric, self.repeats, folder / "effects.png")
        return [folder / "verdicts.csv", folder / "verdicts.md", *effects]

    def by_effect(self) -> list[str]:
        """The configurations, plain first, then the others from the best effect to the worst."""
        plain = list(self.verdicts.loc[self.verdicts["plain"], "configuration"])
        others = self.verdicts[~self.verdicts["plain"]]
        ordered = others.sort_values(
            f"d_{self.metric}", ascending=not higher_is_better(self.metric), na_position="last"
        )
        return plain + list(ordered["configuration"])

    def plot_mean_curves(self, curves: ConfigurationCurves, drawn: list[str], shown: str, path: Path) -> list[Path]:
        """val_loss and the fair gap (gap_loss_eval, or gap_loss for runs without diagnostics) of each
        regularised configuration drawn beside its plain configuration's."""
        table = curves.table
        keys = ("val_loss", "gap_loss_eval" if table["gap_loss_eval"].notna().any() else "gap_loss")
        panels = []
        for configuration in [name for name in drawn if not curves.is_plain(name)]:
            setup = table.loc[table["configuration"].eq(configuration), "setup"].iloc[0]
            partner = table.loc[table["plain"] & table["setup"].eq(setup), "configuration"]
            plain = {key: curves(partner.iloc[0], key) for key in keys} if len(partner) else {}
            panels.append(figures.Panel(configuration, {key: curves(configuration, key) for key in keys}, plain))
        title = f"mean over {self.repeats}, band min..max, by epoch ({shown})"
        return figures.plot_mean_curves(panels, title, path)

    def describe(self, client: mlflow.MlflowClient, parent_run_id: str, table: pd.DataFrame, runs: list) -> None:
        """The parent's Overview page: the answer as its description, metrics a chart can use, as
        tags the best helping configuration (where none helps, the one with the top mean) and its
        top run and that run's logged model, linked from the description too.
        Each metric's point is at step = runs compared, stamped with the newest run's end: the
        same runs give the same point, which the store keeps once, however often compare runs."""
        metrics = study_report.parent_metrics(self.verdicts, self.metric, self.resolution)
        note = study_report.markdown(self.verdicts, self.metric, self.compared, self.repeats, self.margin, self.notes)
        best = study_report.best_configuration(self.verdicts, self.metric)
        top = study_report.top_mean_configuration(self.verdicts, self.metric)
        tags = {tag_names.BEST_CONFIGURATION: best} if best is not None else {}
        if best is None and top is not None:
            tags[tag_names.TOP_MEAN_CONFIGURATION] = top
        pick = top_pick(client, table, best or top, self.metric)
        if pick is not None:
            tags |= {tag_names.TOP_RUN: pick.run_id, **({tag_names.TOP_MODEL: pick.model_id} if pick.model_id else {})}
            headline, _, rest = note.partition("\n\n")
            note = f"{headline}\n\n{pick.markdown(best is not None)}\n\n{rest}"
        tags[tag_names.NOTE] = study_report.within(note, MAX_TAG_VAL_LENGTH)
        stamp = max(run.info.end_time or run.info.start_time for run in runs)
        client.log_batch(
            parent_run_id,
            metrics=[Metric(key, value, stamp, len(runs)) for key, value in metrics.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )


@dataclass(frozen=True)
class TopPick:
    """The run of a configuration with the best value of the metric, and its logged model."""

    configuration: str
    run_id: str
    run_name: str
    experiment_id: str
    model_id: str | None

    def markdown(self, helps: bool) -> str:
        """Links to the run's and the model's pages in the MLflow UI."""
        which = "best helping configuration" if helps else "configuration with the top mean"
        # A name read back from the store: nothing in it may make a link or markup of its own.
        name = re.sub(r"[\[\]()<>`*_|\\\s]+", " ", self.run_name).strip() or self.run_id
        view = "?workflowType=machine_learning"  # MLflow 3's model-training view, not its GenAI one
        run = f"[{name}](#/experiments/{self.experiment_id}/runs/{self.run_id}{view})"
        model = f", its model [{self.model_id}](#/experiments/{self.experiment_id}/models/{self.model_id}{view})"
        return f"Top run of the {which} ({self.configuration}): {run}{model if self.model_id else ''}"


def top_pick(client: mlflow.MlflowClient, table: pd.DataFrame, configuration: str | None, metric: str):
    """The top run of ``configuration`` by ``metric`` and its logged model (the newest the run
    output); None where there is no such run."""
    runs = table[table["configuration"].eq(configuration) & table[metric].notna()]
    if configuration is None or runs.empty:
        return None
    best = runs.loc[runs[metric].idxmax() if higher_is_better(metric) else runs[metric].idxmin()]
    run = client.get_run(best["run_id"])
    outputs = run.outputs.model_outputs if run.outputs else []
    model_id = outputs[-1].model_id if outputs else None
    if model_id is not None and not IDENTIFIER.fullmatch(model_id):
        model_id = None  # not an id this store makes: no link built from it
    return TopPick(configuration, run.info.run_id, str(best["run"]), run.info.experiment_id, model_id)


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
            f"the verdict is about {int(budget.iloc[0])} epoch{'s' if int(budget.iloc[0]) != 1 else ''} of training"
        )
    return notes


class ConfigurationCurves:
    """Each configuration's curve of a metric: the mean over its runs by epoch, with their range;
    each run's history read once."""

    def __init__(self, client: mlflow.MlflowClient, table: pd.DataFrame):
        self.client, self.table = client, table
        self.runs_of = table.groupby("configuration", sort=False)["run_id"].apply(list)
        self._read: dict[tuple[str, str], figures.Curve] = {}

    def __call__(self, configuration: str, key: str) -> figures.Curve:
        if (configuration, key) not in self._read:
            histories = [self.client.get_metric_history(run, key) for run in self.runs_of[configuration]]
            self._read[configuration, key] = figures.mean_curve(histories)
        return self._read[configuration, key]

    def is_plain(self, configuration: str) -> bool:
        return bool(self.table.loc[self.table["configuration"].eq(configuration), "plain"].any())


def shown_text(table: pd.DataFrame, drawn: list[str], every: list[str]) -> str:
    """What a figure shows of the study: ``all 48 runs`` or ``10 of 16 configurations, 30 of 48 runs``."""
    runs = int(table["configuration"].isin(drawn).sum())
    if len(drawn) == len(every):
        return f"all {runs} runs"
    return f"{len(drawn)} of {len(every)} configurations, {runs} of {len(table)} runs"


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
    files += write_figures(client, table, answer, folder, max_curves)
    return files + write_class_effects(table, runs, answer.by_effect(), answer.repeats, folder)


def write_figures(client, table: pd.DataFrame, answer: Answer, folder: Path, max_curves: int) -> list[Path]:
    """The per-epoch curves, test accuracy and mean curves of the first ``max_curves`` configurations
    by effect (plain first), every run of each counted; a title says where any is left out."""
    every = answer.by_effect()
    drawn = every[:max_curves]
    shown = shown_text(table, drawn, every)
    curves = ConfigurationCurves(client, table)
    plain = {name for name in drawn if curves.is_plain(name)}
    files = []
    for name, (key, title) in CURVES.items():
        if key == "gap_loss_eval" and not table["gap_loss_eval"].notna().any():
            key, title = KERAS_GAP
        by_configuration = {configuration: curves(configuration, key) for configuration in drawn}
        if key == "learning_rate" and len({v for c in by_configuration.values() for v in c.high}) < 2:
            continue  # one flat line: no rate changed in any run
        title = f"{title}\nmean of each configuration's runs, band min..max ({shown})"
        files += figures.plot_curves(by_configuration, plain, title, key, folder / f"{name}.png")
    accuracies = {name: list(table.loc[table["configuration"].eq(name), ACCURACY]) for name in drawn}
    title = f"test accuracy by configuration: each run a dot, the mean a bar ({shown})"
    files += figures.plot_test_accuracy(accuracies, plain, title, folder / "test_accuracy.png")
    files += answer.plot_mean_curves(curves, drawn, shown, folder / "mean_curves.png")
    return files
