"""experiments.compare on runs logged straight into a SQLite store (no training needed)."""

from __future__ import annotations

import getpass
import shlex
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag

from experiments.compare import main as compare


def log_run(
    client,
    experiment_id,
    reg,
    test_accuracy,
    parent=None,
    epochs=3,
    model="cnn",
    early_stopping="true",
    params=None,
    overrides=(),
):
    """A finished run shaped like the runner's: tags, params, summary metrics and per-epoch histories."""
    tags = {
        "mlflow.runName": f"{model}-{reg}",
        "model": model,
        "reg": reg,
        "regularised": str(reg != "none").lower(),
        "early_stopping": early_stopping,
        "reduce_lr": "false",
        "reproduce.command": shlex.join(["python", "-m", "experiments.train", f"reg={reg}", *overrides]),
    }
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id)
    now = int(time.time() * 1000)
    history = [
        Metric(key, value * (epoch + 1), now, epoch)
        for epoch in range(epochs)
        for key, value in (("val_loss", 0.5), ("gap_loss", 0.1), ("learning_rate", 0.001))
    ]
    summary = {
        "test_accuracy": test_accuracy,
        "test_loss": 1 - test_accuracy,
        "best_val_loss": 0.4,
        "val_accuracy_at_best": test_accuracy - 0.01,
        "best_epoch": epochs - 1,
        "epochs_run": epochs,
        "lr_changes": 0,
    }
    client.log_batch(
        run.info.run_id,
        metrics=history + [Metric(k, v, now, 0) for k, v in summary.items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def per_run_table(printed: str) -> tuple[str, list[str]]:
    """The printed per-run table (after the verdicts): the line of what every run shares, unwrapped,
    and the table's lines from its header on."""
    lines = printed.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("per run, sorted by")) + 1 :]
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["run"])
    return " ".join(lines[:header]), lines[header:]


def new_sweep(client, experiment, name: str, user: str | None = None) -> str:
    """A sweep parent as the sweep callback makes it: tagged sweep=true, by this login (mlflow.user)."""
    tags = {"sweep": "true", "mlflow.user": user or getpass.getuser()}
    return client.create_run(experiment, run_name=name, tags=tags).info.run_id


@pytest.fixture
def sweep(tracking_uri):
    """A parent run with plain, l2 and dropout children, plus an unrelated top-level run."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("study")
    parent = new_sweep(client, experiment, "sweep reg=none,l2,dropout")
    children = {
        reg: log_run(client, experiment, reg, accuracy, parent=parent)
        for reg, accuracy in (("none", 0.90), ("l2", 0.93), ("dropout", 0.88))
    }
    log_run(client, experiment, "none", 0.5)
    return client, parent, children


def test_table_values_equal_what_the_runs_logged(sweep, tmp_path, capsys):
    client, parent, children = sweep
    assert compare(["--experiment", "study", "--output", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(table["reg"]) == ["l2", "none", "dropout"]  # the latest sweep, best test accuracy first
    for _, row in table.iterrows():
        logged = client.get_run(row["run_id"]).data.metrics
        assert row["test_accuracy"] == pytest.approx(logged["test_accuracy"])
        assert row["best_val_accuracy"] == pytest.approx(logged["val_accuracy_at_best"])
        assert row["gap_loss"] == pytest.approx(logged["gap_loss"])  # the final gap: last epoch's
        assert row["epochs"] == 3
    assert list(table["plain"]) == [False, True, False]
    assert table.set_index("reg").loc["l2", "d_test_accuracy"] == pytest.approx(0.03)
    assert table.set_index("reg").loc["dropout", "d_test_accuracy"] == pytest.approx(-0.02)
    printed = capsys.readouterr().out
    marked = [line.split() for line in printed.splitlines() if line.lstrip().startswith("*")]
    assert [words[1] for words in marked] == ["cnn-none"]  # the plain run, and only it, is marked
    assert all(f"cnn-{reg}" in printed for reg in children)


def test_report_files_and_upload_to_the_parent(sweep, tmp_path):
    client, parent, _ = sweep
    assert compare(["--experiment", "study", "--parent", parent, "--output", str(tmp_path / "out")]) == 0
    expected = {
        "comparison.csv",
        "comparison.md",
        "val_loss.png",
        "gap_loss.png",
        "learning_rate.png",  # the runs' rates change (a sweep whose rates never do gets none)
        "test_accuracy.png",
        "verdicts.csv",
        "verdicts.md",
        "effects.png",
        "mean_curves.png",
    }
    expected |= {name.replace(".png", ".svg") for name in expected if name.endswith(".png")}
    assert {path.name for path in (tmp_path / "out").iterdir()} == expected
    assert {a.path.split("/")[-1] for a in client.list_artifacts(parent, "comparison")} == expected
    assert "| cnn-l2" in (tmp_path / "out" / "comparison.md").read_text()


def test_latest_is_the_newest_sweep_of_whoever_compares(sweep, tmp_path, capsys):
    client, parent, _ = sweep
    experiment = client.get_run(parent).info.experiment_id
    other = new_sweep(client, experiment, "sweep reg=none by a colleague", user="a-colleague")
    log_run(client, experiment, "none", 0.99, parent=other)  # newer, and not ours
    assert compare(["--experiment", "study", "--output", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith(f"3 runs of sweep {parent} ")


def test_without_an_experiment_compare_follows_the_newest_sweep_and_says_which(sweep, tmp_path, capsys):
    client, parent, _ = sweep
    newer_experiment = client.create_experiment("regularisation-study")
    newer = new_sweep(client, newer_experiment, "sweep reg=none,l2 trainer.seed=1,2")
    for reg, accuracy in (("none", 0.9), ("l2", 0.92)):
        log_run(client, newer_experiment, reg, accuracy, parent=newer)
    assert compare(["--output", str(tmp_path / "out")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"2 runs of sweep {newer} (sweep reg=none,l2 trainer.seed=1,2) in experiment ")
    assert "regularisation-study, started 20" in first and first.endswith("UTC: 2 configurations")
    assert compare(["--experiment", "study", "--output", str(tmp_path / "out")]) == 0  # the older one, when asked
    assert capsys.readouterr().out.startswith(f"3 runs of sweep {parent} (")
    assert compare(["--parent", parent, "--output", str(tmp_path / "out")]) == 0  # a run id: its own experiment
    assert capsys.readouterr().out.startswith(f"3 runs of sweep {parent} (")
    assert compare(["--experiment", "study", "--parent", newer, "--output", str(tmp_path / "out")]) == 2
    assert f"run {newer} is in experiment 'regularisation-study', not 'study'" in capsys.readouterr().err


def test_all_compares_every_top_level_run(sweep, tmp_path):
    assert compare(["--experiment", "study", "--parent", "all", "--output", str(tmp_path / "out")]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "comparison.csv")) == 4


def test_runs_of_two_backends_are_paired_within_their_backend_and_labelled_by_it(tracking_uri, tmp_path):
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("backends")
    for seed in (1, 2):
        for backend, plain, l2 in (("tensorflow", 0.80, 0.82), ("jax", 0.90, 0.95)):
            params = {"trainer.seed": seed, "keras.backend": backend, "keras.backend_version": "1"}
            for reg, accuracy in (("none", plain + seed / 100), ("l2", l2 + seed / 100)):
                log_run(client, experiment, reg, accuracy, params=params, overrides=[f"trainer.seed={seed}"])
    assert compare(["--experiment", "backends", "--output", str(tmp_path / "out")]) == 0
    verdicts = pd.read_csv(tmp_path / "out" / "verdicts.csv").set_index("configuration")
    assert sorted(verdicts.index) == ["l2", "l2 (jax)", "none", "none (jax)"]
    # Each l2 against the plain runs of its own backend: +2 pp on TensorFlow, +5 pp on JAX.
    assert verdicts.loc["l2", "d_test_accuracy"] == pytest.approx(0.02)
    assert verdicts.loc["l2 (jax)", "d_test_accuracy"] == pytest.approx(0.05)
    assert verdicts.loc["l2 (jax)", "n"] == 2


def test_baseline_is_the_plain_run_with_the_same_callbacks(tracking_uri, tmp_path):
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("callbacks")
    log_run(client, experiment, "none", 0.80, early_stopping="false")
    log_run(client, experiment, "l2", 0.85, early_stopping="false")
    log_run(client, experiment, "none", 0.90, early_stopping="true")
    log_run(client, experiment, "l2", 0.91, early_stopping="true")
    assert compare(["--experiment", "callbacks", "--output", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index(["reg", "early_stopping"])
    assert table.loc[("l2", False), "d_test_accuracy"] == pytest.approx(0.05)
    assert table.loc[("l2", True), "d_test_accuracy"] == pytest.approx(0.01)


@pytest.fixture
def optimizer_sweep(tracking_uri):
    """Runs like the jobs of a sweep over reg and optimizer, and an l2 run trained for 30 epochs."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("setups")
    for job, (reg, optimizer, accuracy, size) in enumerate(
        [
            ("none", "adam", 0.80, 100),
            ("none", "sgd", 0.70, 100),
            ("l2", "adam", 0.85, 100),
            ("l2", "sgd", 0.78, 100),
            ("batchnorm", "adam", 0.82, 120),
        ]
    ):
        # As a sweep's jobs: each has its own output folder, and the regulariser sets its own params.
        params = {
            "optimizer.name": optimizer,
            "trainer.epochs": 3,
            "reg.l2": 1e-4 if reg == "l2" else 0.0,
            "reg.batchnorm": reg == "batchnorm",
            "model.total_params": size,
            "callbacks.tensorboard.log_dir": f"/multirun/{job}/tensorboard",
        }
        log_run(
            client, experiment, reg, accuracy, params=params, overrides=[f"optimizer={optimizer}", "trainer.verbose=0"]
        )
    log_run(
        client,
        experiment,
        "l2",
        0.95,
        params={"optimizer.name": "adam", "trainer.epochs": 30, "reg.l2": 1e-4, "model.total_params": 100},
        overrides=["optimizer=adam", "trainer.verbose=0", "trainer.epochs=30"],
    )
    return client, experiment


def test_baseline_is_the_plain_run_trained_the_same_way_but_for_the_regulariser(optimizer_sweep, tmp_path):
    assert compare(["--experiment", "setups", "--output", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv", dtype={"trainer.epochs": str})
    differences = table.fillna({"trainer.epochs": "default"}).set_index(["reg", "optimizer", "trainer.epochs"])[
        "d_test_accuracy"
    ]
    assert differences[("l2", "adam", "default")] == pytest.approx(0.05)
    assert differences[("l2", "sgd", "default")] == pytest.approx(0.08)
    assert differences[("batchnorm", "adam", "default")] == pytest.approx(0.02)
    assert pd.isna(differences[("l2", "adam", "30")])  # no plain run was trained for 30 epochs


def test_overrides_that_differ_between_runs_get_columns_and_label_the_curves(optimizer_sweep, tmp_path, capsys):
    client, experiment = optimizer_sweep
    assert compare(["--experiment", "setups", "--output", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv", keep_default_na=False)
    # The overrides every run shares (trainer.verbose) and the one shown already (reg) get none.
    assert list(table.columns[2:8]) == ["status", "model", "reg", "optimizer", "trainer.epochs", "regularised"]
    assert sorted(zip(table["reg"], table["optimizer"], table["trainer.epochs"])) == [
        ("batchnorm", "adam", ""),
        ("l2", "adam", ""),
        ("l2", "adam", "30"),
        ("l2", "sgd", ""),
        ("none", "adam", ""),
        ("none", "sgd", ""),
    ]
    same, lines = per_run_table(capsys.readouterr().out)
    assert same.startswith("the same for every run: status=FINISHED, model=cnn, early_stopping=true")
    assert lines[0].split()[:4] == ["run", "reg", "optimizer", "trainer.epochs"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nowhere"], "error: no experiment named 'nowhere'"),
        (["--experiment", "empty"], "has no runs to compare"),
        (["--experiment", "empty", "--parent", "0123456789abcdef"], "error: no run 0123456789abcdef"),
    ],
)
def test_clear_errors(tracking_uri, tmp_path, capsys, args, message):
    mlflow.MlflowClient(tracking_uri).create_experiment("empty")
    assert compare([*args, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_an_output_folder_that_cannot_be_made_is_one_line(sweep, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    output = tmp_path / "a-file" / "out"
    assert compare(["--experiment", "study", "--output", str(output)]) == 2
    printed = capsys.readouterr()
    assert "* marks the plain run" in printed.out  # the table was printed before the write failed
    assert printed.err.strip() == f"error: --output {output}: cannot write the report there (Not a directory: {output})"
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_sort_by_must_be_a_column(sweep, tmp_path, capsys):
    assert compare(["--experiment", "study", "--sort-by", "f1", "--output", str(tmp_path)]) == 2
    assert "--sort-by f1: expected one of" in capsys.readouterr().err


def test_group_by_must_be_a_tag_of_the_runs(sweep, tmp_path, capsys):
    assert compare(["--experiment", "study", "--group-by", "regs", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --group-by regs: no run has that tag; the runs' tags: ")
    assert "reg" in error.split("tags: ")[1].split(", ") and "\n" not in error
    assert not (tmp_path / "out").exists()  # no report of blank variants
    assert compare(["--experiment", "study", "--group-by", "model", "--output", str(tmp_path / "out")]) == 0


def test_group_by_another_tag_adds_its_column_and_keeps_model_and_reg(sweep, tmp_path, capsys):
    client, _, children = sweep
    for reg, run_id in children.items():
        client.set_tag(run_id, "optimizer", "sgd" if reg == "l2" else "adam")
    assert compare(["--experiment", "study", "--group-by", "optimizer", "--output", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(table.columns[2:6]) == ["status", "model", "reg", "optimizer"]
    assert table.set_index("reg")["optimizer"].to_dict() == {"l2": "sgd", "none": "adam", "dropout": "adam"}
    header = per_run_table(capsys.readouterr().out)[1][0].split()
    assert header[:3] == ["run", "reg", "optimizer"]


def test_the_markdown_report_shows_a_missing_value_as_a_dash(sweep, tmp_path):
    assert compare(["--experiment", "study", "--output", str(tmp_path / "out")]) == 0
    lines = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    l2 = [cell.strip() for cell in next(line for line in lines if "cnn-l2" in line).strip("|").split("|")]
    assert dict(zip(header, l2))["stopped_epoch"] == "-"  # no early stop logged
    assert "nan" not in "\n".join(lines)


def test_figures_count_every_run_of_each_configuration_and_say_what_is_left_out(sweep, tmp_path):
    from matplotlib.image import imread

    client, parent, children = sweep
    experiment = client.get_run(parent).info.experiment_id
    log_run(client, experiment, "l2", 0.91, parent=parent)  # the same config again: another repeat
    assert compare(["--experiment", "study", "--output", str(tmp_path / "all")]) == 0
    svg = (tmp_path / "all" / "test_accuracy.svg").read_text()
    assert "all 4 runs" in svg and "cnn-" not in svg  # by configuration, not a label per run
    assert all(f">{name}</text>" in svg for name in ("none", "l2", "dropout"))  # text, editable in a paper
    for figure in ("effects", "val_loss", "gap_loss", "test_accuracy", "mean_curves"):
        assert (tmp_path / "all" / f"{figure}.svg").is_file(), figure
        height, width, _ = imread(tmp_path / "all" / f"{figure}.png").shape
        assert width >= 1000, (figure, width)  # 150 dpi: an 8-inch figure is 1200 pixels wide
    gap = (tmp_path / "all" / "gap_loss.svg").read_text()
    assert "gap_loss_eval" not in gap and "Keras' own" in gap  # these runs measured no diagnostics
    assert compare(["--experiment", "study", "--max-curves", "2", "--output", str(tmp_path / "two")]) == 0
    svg = (tmp_path / "two" / "test_accuracy.svg").read_text()
    assert "2 of 3 configurations, 3 of 4 runs" in svg  # plain and the best effect (l2, both its runs)


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        *(("--max-curves", given, "a whole number >= 1") for given in ("0", "-1", "two")),
        *(("--margin", given, "a number >= 0") for given in ("-0.5", "nan", "half")),
    ],
)
def test_a_number_option_out_of_its_range_is_refused_by_name(sweep, tmp_path, capsys, option, given, expected):
    with pytest.raises(SystemExit) as exited:
        compare(["--experiment", "study", option, given, "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert f"argument {option}: '{given}': expected {expected}" in capsys.readouterr().err


def test_a_margin_wide_enough_makes_a_small_difference_equivalent(seeded_sweep, tmp_path):
    # dropout: -0.3 pp, its interval [-5.5, +4.8] pp: inconclusive at 0.5 pp, equivalent within 6 pp.
    assert compare(["--experiment", "seeds", "--margin", "6", "--output", str(tmp_path / "out")]) == 0
    verdicts = pd.read_csv(tmp_path / "out" / "verdicts.csv").set_index("configuration")
    assert verdicts.loc["dropout", "verdict"] == "equivalent" and pd.isna(verdicts.loc["dropout", "repeats_needed"])
    assert "equivalent (within ±6 pp): dropout" in (tmp_path / "out" / "verdicts.md").read_text()


def test_the_notes_name_the_test_split_s_resolution_and_a_budget_still_improving():
    from experiments import study
    from experiments.report import DATA_LOSSES, KERAS_LOSSES, answer_notes

    table = pd.DataFrame({"budget": [10.0] * 4, "best_epoch": [9.0, 9.0, 9.0, 4.0]})
    verdicts = pd.DataFrame({"p": [np.nan, 0.2, 0.01]})
    notes = answer_notes(table, verdicts, study.Design(folds=5), 270, DATA_LOSSES)
    assert notes[0].startswith("Nadeau-Bengio corrected t (5 folds) intervals over the training data's folds")
    assert "Holm-adjusted over 2 comparisons" in notes[0]
    assert "test split: 270 examples, 1 example = 0.37 pp" in notes
    assert "losses: the data's part, Keras' loss less the L1/L2 penalty" in notes
    assert notes[-1].endswith("the verdict is about 10 epochs of training")
    table["best_epoch"] = [9.0, 3.0, 4.0, 5.0]
    notes = answer_notes(table, verdicts, study.Design(), np.nan, KERAS_LOSSES)
    assert not [note for note in notes if note.startswith(("still improving", "test split"))]
    assert "losses: Keras' own, which hold the L1/L2 penalty (these runs did not measure it)" in notes


def test_a_sweep_whose_driver_died_is_ended_killed_by_the_next_compare(tracking_uri, tmp_path):
    """kill -9 to a sweep's driver leaves its parent RUNNING: compare (as the next sweep) ends it."""
    import os
    import socket
    import subprocess
    import sys

    from experiments.compare import main as compare

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("keras-experiments")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    parents = {}
    for name, host, pid in [
        ("dead", socket.gethostname(), gone.stdout.strip()),
        ("alive", socket.gethostname(), str(os.getpid())),
        ("elsewhere", "another-host", "1"),
    ]:
        parents[name] = client.create_run(
            experiment, run_name=name, tags={"sweep": "true", "process.host": host, "process.pid": pid}
        ).info.run_id
    child = client.create_run(
        experiment, tags={"mlflow.parentRunId": parents["alive"], "model": "cnn", "reg": "none", "regularised": "false"}
    )
    client.set_terminated(child.info.run_id)
    assert compare(["--tracking-uri", tracking_uri, "--parent", "all", "--output", str(tmp_path / "report")]) == 0
    dead = client.get_run(parents["dead"])
    assert dead.info.status == "KILLED" and "driver process ended without ending it" in dead.data.tags["failure.reason"]
    assert client.get_run(parents["alive"]).info.status == "RUNNING"  # its driver (this process) still runs
    assert client.get_run(parents["elsewhere"]).info.status == "RUNNING"  # not this machine's to judge


# ----------------------------------------------------------------------------- studies: repeats and verdicts

SEEDS = (1, 2, 3)
STUDY = {"none": (0.90, 0.91, 0.92), "l2": (0.93, 0.935, 0.94), "dropout": (0.89, 0.93, 0.90)}


@pytest.fixture
def seeded_sweep(tracking_uri):
    """A sweep of reg=none,l2,dropout trainer.seed=1,2,3: l2 better in every seed, dropout mixed."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("seeds")
    parent = new_sweep(client, experiment, "sweep reg=none,l2,dropout trainer.seed=1,2,3")
    for reg, accuracies in STUDY.items():
        for seed, accuracy in zip(SEEDS, accuracies):
            params = {"trainer.seed": seed, "reg.l2": 1e-4 if reg == "l2" else 0.0}
            run = log_run(
                client, experiment, reg, accuracy, parent=parent, params=params, overrides=[f"trainer.seed={seed}"]
            )
            if (reg, seed) == ("l2", 3):  # l2's best run has a logged model, as the runner's do
                model = client.create_logged_model(experiment, name="cnn-l2", source_run_id=run)
                client.log_outputs(run, [LoggedModelOutput(model.model_id, step=2)])
    return client, parent


def test_repeats_are_paired_by_seed_and_judged_on_a_holm_adjusted_t_interval(seeded_sweep, tmp_path, capsys):
    from scipy import stats

    client, parent = seeded_sweep
    assert compare(["--experiment", "seeds", "--output", str(tmp_path / "out")]) == 0
    verdicts = pd.read_csv(tmp_path / "out" / "verdicts.csv").set_index("configuration")
    assert list(verdicts.index) == ["none", "l2", "dropout"]  # plain first
    # Two comparisons: Holm judges the smaller p-value (l2's) at 0.05 / 2 and, that one rejected, the other at 0.05.
    for reg, level in (("l2", 0.025), ("dropout", 0.05)):
        differences = [a - b for a, b in zip(STUDY[reg], STUDY["none"])]
        mean, error = sum(differences) / 3, stats.sem(differences)
        low, high = stats.t.interval(1 - level, 2, loc=mean, scale=error)
        row = verdicts.loc[reg]
        assert (row["n"], row["runs"], row["level"]) == (3, 3, pytest.approx(level))
        assert row["d_test_accuracy"] == pytest.approx(mean, abs=1e-6)
        assert (row["d_test_accuracy_low"], row["d_test_accuracy_high"]) == pytest.approx((low, high), abs=1e-6)
        unadjusted = stats.t.interval(0.95, 2, loc=mean, scale=error)
        assert (row["d_test_accuracy_low_unadjusted"], row["d_test_accuracy_high_unadjusted"]) == pytest.approx(
            unadjusted, abs=1e-6
        )
    assert verdicts.loc["l2", ["verdict", "wins", "ties", "losses"]].tolist() == ["helps", 3, 0, 0]
    assert verdicts.loc["dropout", ["verdict", "wins", "ties", "losses"]].tolist() == ["inconclusive", 1, 0, 2]
    assert verdicts.loc["dropout", "repeats_needed"] > 3  # what would tell a difference of the margin from none
    printed = capsys.readouterr().out
    assert (
        printed.splitlines()[1]
        == "l2 helps: +2.5 pp test_accuracy [+0.7, +4.3], W/T/L 3/0/0 seeds; inconclusive: dropout"
    )
    said = " ".join(printed.split())  # the notes are wrapped at 120 characters
    assert "paired t intervals over training randomness on this split and test set" in said
    assert "Holm-adjusted over 2 comparisons" in said
    assert max(len(line) for line in printed.splitlines() if not line.startswith(("wrote", "9 runs"))) <= 120


def test_the_sweep_parent_s_overview_carries_the_answer(seeded_sweep, tmp_path):
    client, parent = seeded_sweep
    assert compare(["--experiment", "seeds", "--parent", parent, "--output", str(tmp_path / "out")]) == 0
    run = client.get_run(parent)
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith(
        "**l2 helps: +2.5 pp test_accuracy [+0.7, +4.3], W/T/L 3/0/0 seeds; inconclusive: dropout**"
    )
    assert "| configuration" in description and "| l2 " in description
    # In the page's units (pp), rounded: these runs give no test split size, so to 4 digits.
    assert run.data.metrics["plain_test_accuracy"] == 0.91 and run.data.metrics["best_test_accuracy"] == 0.935
    assert run.data.metrics["d_test_accuracy_pp.l2"] == 2.5
    assert run.data.metrics["d_test_accuracy_pp.dropout"] == -0.3333
    # Compare again on the same runs: the same points, kept once, not a second point of each.
    assert compare(["--experiment", "seeds", "--parent", parent, "--output", str(tmp_path / "again")]) == 0
    history = client.get_metric_history(parent, "d_test_accuracy_pp.l2")
    assert [(point.step, point.value) for point in history] == [(9, 2.5)]  # step: the runs compared
    assert run.data.tags["best_configuration"] == "l2" and "top_mean_configuration" not in run.data.tags
    top = client.get_run(run.data.tags["top_run"])  # l2's run with the best test accuracy, and its model
    assert (top.data.tags["reg"], top.data.metrics["test_accuracy"]) == ("l2", 0.94)
    model = top.outputs.model_outputs[0].model_id
    assert run.data.tags["top_model"] == model
    experiment = run.info.experiment_id
    assert description.splitlines()[2] == (
        f"Top run of the best helping configuration (l2): [cnn-l2](#/experiments/{experiment}/runs/{top.info.run_id}"
        f"?workflowType=machine_learning), its model [{model}](#/experiments/{experiment}/models/{model}"
        "?workflowType=machine_learning)"
    )
    names = {a.path.split("/")[-1] for a in client.list_artifacts(parent, "comparison")}
    assert {"verdicts.csv", "verdicts.md", "effects.png", "mean_curves.png"} <= names


def test_one_seed_gives_no_verdict_and_the_parent_names_only_the_top_mean(sweep, tmp_path, capsys):
    client, parent, _ = sweep
    assert compare(["--experiment", "study", "--output", str(tmp_path / "out")]) == 0
    tags = client.get_run(parent).data.tags
    assert tags["top_mean_configuration"] == "l2" and "best_configuration" not in tags
    assert capsys.readouterr().out.splitlines()[1] == "no verdict (1 repeat): l2, dropout; none helps (top mean: l2)"
    verdicts = pd.read_csv(tmp_path / "out" / "verdicts.csv").set_index("configuration")
    assert verdicts.loc["l2", "d_test_accuracy"] == pytest.approx(0.03) and pd.isna(
        verdicts.loc["l2", "d_test_accuracy_low"]
    )


@pytest.mark.parametrize(
    ("requirements", "code", "said"),
    [
        (["l2: d_test_accuracy >= 0"], 0, ""),
        (["l2: d_test_accuracy >= 0", "l2: d_best_val_loss <= 0.01"], 0, ""),
        (
            ["l2: d_test_accuracy >= 0", "dropout: d_test_accuracy >= 0"],
            1,
            "requirement not met: dropout: d_test_accuracy >= 0: the interval's lower bound is -0.05",
        ),
        (["l2: d_test_accuracy >= 0.02"], 1, "requirement not met: l2: d_test_accuracy >= 0.02: the interval's lower"),
        (["l3: d_test_accuracy >= 0"], 2, "error: --require 'l3: d_test_accuracy >= 0': 'l3': no such regularised"),
        (["l2: d_f1 >= 0"], 2, "error: --require 'l2: d_f1 >= 0': no column d_f1; expected one of d_best_val_loss"),
        (["l2 d_test_accuracy >= 0"], 2, "error: --require 'l2 d_test_accuracy >= 0': expected 'CONFIGURATION: d_"),
        (["l2: d_test_accuracy >= zero"], 2, "error: --require 'l2: d_test_accuracy >= zero': expected 'CONFIGURATIO"),
    ],
)
def test_require_gates_on_the_interval(seeded_sweep, tmp_path, capsys, requirements, code, said):
    given = [part for requirement in requirements for part in ("--require", requirement)]
    assert compare(["--experiment", "seeds", "--output", str(tmp_path / "out"), *given]) == code
    error = capsys.readouterr().err.strip()
    assert error.startswith(said) and (code != 2 or "\n" not in error)
    assert (tmp_path / "out").exists() == (code != 2)  # a requirement that cannot be judged stops before the report


def test_promote_registers_the_top_helping_run_s_model_as_champion(seeded_sweep, tmp_path, capsys):
    client, parent = seeded_sweep
    out = str(tmp_path / "out")
    args = ["--experiment", "seeds", "--parent", parent, "--output", out, "--promote", "digits"]
    assert compare([*args, "--require", "l2: d_test_accuracy >= 0"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    version = client.get_model_version_by_alias("digits", "champion")
    top = client.get_run(client.get_run(parent).data.tags["top_run"])
    assert (
        said
        == f"promoted: digits version 1 is digits@champion: run cnn-l2 ({top.info.run_id}), l2, test_accuracy 0.9400"
    )
    model = top.outputs.model_outputs[0].model_id
    assert (int(version.version), version.run_id, version.source) == (1, top.info.run_id, f"models:/{model}")
    assert version.tags == {
        "run_id": top.info.run_id,
        "run_name": "cnn-l2",
        "configuration": "l2",
        "test_accuracy": "0.9400",
        "study": parent,
    }
    assert version.description.startswith(f"Champion by the study of sweep {parent} (")
    assert "l2 helps: +2.5 [+0.7, +4.3] pp test_accuracy, W/T/L 3/0/0 seeds (Holm-adjusted)" in version.description
    assert "test_accuracy 0.9400" in version.description and f"/runs/{parent}?" in version.description

    # The gate fails: nothing moves, one line says why, exit 1.
    assert compare([*args, "--require", "dropout: d_test_accuracy >= 0"]) == 1
    error = capsys.readouterr().err
    assert "not promoted to digits@champion: 1 requirement not met; nothing moved" in error
    assert len(client.search_model_versions("name='digits'")) == 1


def test_promote_moves_nothing_where_no_configuration_helps(sweep, tmp_path, capsys):
    client, parent, _ = sweep
    args = ["--experiment", "study", "--parent", parent, "--output", str(tmp_path / "out"), "--promote", "digits"]
    assert compare(args) == 1
    error = capsys.readouterr().err.strip()
    why = "no configuration helps on test_accuracy (top mean: l2, which need not differ)"
    assert error == f"not promoted to digits@champion: {why}; nothing moved"
    assert client.search_registered_models() == []
