"""Sweeps: one parent run, a child per job, the comparison on the parent; failures recorded."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import EPOCH_KEYS, all_runs, artifact_texts

pytestmark = pytest.mark.slow
# Two epochs: no plateau cuts the rate, so there is no (flat) learning_rate.png.
REPORT = {"comparison.csv", "comparison.md", "val_loss.png", "gap_loss.png", "test_accuracy.png"}
REPORT |= {"verdicts.csv", "verdicts.md", "effects.png", "mean_curves.png", "per_class.csv", "per_class.png"}
REPORT |= {name.replace(".png", ".svg") for name in REPORT if name.endswith(".png")}


def parent_and_children(runs):
    parents = [run for run in runs if run.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def test_joblib_sweep_against_a_tracking_server(run_cli, mlflow_server, tmp_path):
    done = run_cli(
        "experiments.train",
        "-m",
        "reg=none,l2",
        "trainer.epochs=2",
        "trainer.verbose=0",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        # Secrets in the forms a sweep gives them: a URL Hydra escapes (postgresql\://u\:PW@...) in
        # each job's overrides and launcher line, and a dict value.
        "+mlflow.tags.db=postgresql://u:URL-PW@db:5432/x",
        "+db={password: DICT-PW, host: h}",
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(mlflow_server)
    runs = all_runs(mlflow_server)
    parent, children = parent_and_children(runs)
    assert len(runs) == 3 and len(children) == 2
    assert sorted(child.data.tags["reg"] for child in children) == ["l2", "none"]
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    for child in children:
        for key in EPOCH_KEYS:
            assert sorted(m.step for m in client.get_metric_history(child.info.run_id, key)) == [0, 1], key
    assert (parent.data.metrics["jobs"], parent.data.metrics["jobs_finished"], parent.data.metrics["jobs_failed"]) == (
        2,
        2,
        0,
    )
    assert parent.data.params["sweep.overrides"].startswith("reg=none,l2")
    # Progress as each job ended, in the job's own process: the count as the step, and on the console.
    # Two jobs side by side may end together: then each counts both.
    points = sorted((m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "jobs_finished"))
    assert points[-1] == (2, 2) and all(step in (1, 2) and value <= step for step, value in points)
    console = done.stdout + done.stderr
    assert "job 2 of 2 done" in console and "(2 jobs); see it at " + mlflow_server in console
    assert console.count(f"/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?") == 2
    assert {a.path.split("/")[-1] for a in client.list_artifacts(parent.info.run_id, "comparison")} == REPORT
    assert {file.name for file in (Path(parent.data.tags["internal.sweep.dir"]) / "comparison").iterdir()} == REPORT
    for tag in ("mlflow.user", "git.commit", "git.dirty"):  # as the jobs have them
        assert parent.data.tags[tag] == children[0].data.tags[tag], tag
    assert parent.data.tags["mlflow.source.name"].endswith("train.py")  # the program the sweep ran
    bookkeeping = {"internal.process.host", "internal.process.pid", "internal.sweep.dir"}
    assert bookkeeping <= set(parent.data.tags) and not {"process.host", "sweep.dir"} & set(parent.data.tags)
    seen = [done.stdout, done.stderr]
    for run in runs:
        seen += [run.info.run_name, str(run.data.params), str(run.data.tags)]
        seen.append(artifact_texts(client, run.info.run_id, tmp_path / "artifacts" / run.info.run_id))
    seen += [path.read_text(errors="replace") for path in (tmp_path / "multirun").rglob("*.yaml")]
    seen = "\n".join(seen)
    assert "#0 : reg=none" in seen and "+mlflow.tags.db=postgresql\\://u\\:[redacted]@db" in seen  # a job's line
    assert "password: [redacted]" in seen and children[0].data.params["db.host"] == "h"
    assert [line for line in seen.splitlines() if "URL-PW" in line or "DICT-PW" in line] == []

    shown = run_cli("experiments.compare", "--tracking-uri", mlflow_server, "--output", "report")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "cnn-none" in shown.stdout and "cnn-l2" in shown.stdout and parent.info.run_id in shown.stdout
    # Each job logged its own output folder's paths, yet the l2 job is measured against the plain one.
    report = pd.read_csv(tmp_path / "report" / "comparison.csv").set_index("reg")
    test_accuracy = {child.data.tags["reg"]: child.data.metrics["test_accuracy"] for child in children}
    assert report.loc["l2", "d_test_accuracy"] == pytest.approx(test_accuracy["l2"] - test_accuracy["none"])


def test_a_failed_job_does_not_stop_the_others(run_cli, tracking_uri):
    done = run_cli(
        "experiments.train", "-m", "reg=dropout", "reg.dropout=1.5,0.2", "trainer.epochs=1", "trainer.verbose=0"
    )
    assert done.returncode != 0
    assert "reg.dropout=1.5: expected a number in [0, 1)" in done.stderr and "Traceback" not in done.stderr
    parent, children = parent_and_children(all_runs(tracking_uri))
    assert [child.info.status for child in children] == ["FINISHED"]
    assert children[0].data.params["reg.dropout"] == "0.2"
    assert parent.info.status == "FAILED"
    assert (parent.data.metrics["jobs"], parent.data.metrics["jobs_finished"], parent.data.metrics["jobs_failed"]) == (
        2,
        1,
        1,
    )


def test_an_interpolation_only_some_jobs_can_resolve_fails_those_jobs_only(run_cli, tracking_uri):
    # SGD has a momentum, Adam none: the parent records the override as typed, not resolved (or
    # refused) against the sweep's base config, which would have left the SGD job without a parent.
    name = "mlflow.run_name=${model.name}-${optimizer.momentum}"
    done = run_cli("experiments.train", "-m", "optimizer=adam,sgd", "trainer.epochs=1", "trainer.verbose=0", name)
    assert done.returncode != 0
    assert "mlflow.run_name: Interpolation key 'optimizer.momentum' not found" in done.stderr
    assert "Traceback" not in done.stderr
    parent, children = parent_and_children(all_runs(tracking_uri))
    assert parent.data.params["sweep.overrides"].endswith(name)
    assert [(child.info.run_name, child.info.status) for child in children] == [("cnn-0.9", "FINISHED")]
    assert (parent.info.status, parent.data.metrics["jobs_failed"]) == ("FAILED", 1)


def test_a_seeded_sweep_answers_on_its_parent(run_cli, tracking_uri, tmp_path):
    done = run_cli(
        "experiments.train",
        "-m",
        "reg=none,l2",
        "trainer.seed=1,2,3",
        "trainer.epochs=2",
        "trainer.verbose=0",
        "mlflow.log_model=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parent, children = parent_and_children(all_runs(tracking_uri))
    assert len(children) == 6 and all(child.info.status == "FINISHED" for child in children)
    for child in children:  # the diagnostics, one point an epoch
        client = mlflow.MlflowClient(tracking_uri)
        for key in ("train_eval_loss", "gap_loss_eval", "penalty_loss", "weight_norm"):
            assert [p.step for p in client.get_metric_history(child.info.run_id, key)] == [0, 1], key
        assert (child.data.metrics["penalty_loss"] > 0) == (child.data.tags["reg"] == "l2")
        metrics = child.data.metrics  # the test split's size, and its loss less the L1/L2 penalty
        assert metrics["test_examples"] == 270 and metrics["penalty_loss_at_best"] >= 0
        # Per class on the test split: recall of class k is its share of the class's examples.
        assert {f"test_recall.{k}" for k in range(10)} | {f"test_precision.{k}" for k in range(10)} <= set(metrics)
        assert all(0 <= metrics[f"test_recall.{k}"] <= 1 for k in range(10))
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "confusion_matrix.png" in files
        assert (metrics["test_data_loss"] < metrics["test_loss"]) == (child.data.tags["reg"] == "l2")
    by_seed = {
        (child.data.tags["reg"], child.data.params["trainer.seed"]): child.data.metrics["test_accuracy"]
        for child in children
    }
    differences = [by_seed[("l2", seed)] - by_seed[("none", seed)] for seed in "123"]
    # In pp, rounded a decimal below the test split's step (1 of 270 examples = 0.37 pp).
    assert parent.data.metrics["d_test_accuracy_pp.l2"] == round(sum(differences) / 3 * 100, 2)
    description = parent.data.tags["mlflow.note.content"]
    assert "l2" in description.splitlines()[0] and "| configuration" in description
    report = Path(parent.data.tags["internal.sweep.dir"]) / "comparison"
    assert (report / "effects.png").stat().st_size > 0
    verdicts = pd.read_csv(report / "verdicts.csv")
    l2 = verdicts.set_index("configuration").loc["l2"]
    assert l2["n"] == 3 and l2["d_test_accuracy_low"] <= l2["d_test_accuracy"] <= l2["d_test_accuracy_high"]
    assert l2["verdict"] in ("helps", "hurts", "equivalent", "inconclusive")
    assert f"l2 {l2['verdict']}:" in description or f"{l2['verdict']}: l2" in description
    assert l2["wins"] + l2["ties"] + l2["losses"] == 3
    assert "test split: 270 examples, 1 example = 0.37 pp" in description
    assert "Holm-adjusted over 1 comparison " in description
    named = parent.data.tags.get("best_configuration", parent.data.tags.get("top_mean_configuration"))
    assert named in ("none", "l2") and ("best_configuration" in parent.data.tags) == (l2["verdict"] == "helps")


def test_a_three_fold_sweep_validates_on_disjoint_folds_with_one_test_split(run_cli, tracking_uri):
    done = run_cli(
        "experiments.train",
        "-m",
        "data.folds=3",
        "data.fold=0,1,2",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "mlflow.log_model=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, children = parent_and_children(all_runs(tracking_uri))
    assert sorted(child.data.params["data.fold"] for child in children) == ["0", "1", "2"]
    assert {child.data.params["data.folds"] for child in children} == {"3"}
    digests = [
        {item.dataset.name.rsplit("-", 1)[1]: item.dataset.digest for item in child.inputs.dataset_inputs}
        for child in children
    ]
    assert len({digest["test"] for digest in digests}) == 1
    assert (
        len({digest["validation"] for digest in digests}) == 3 and len({digest["training"] for digest in digests}) == 3
    )


def test_a_search_s_trials_are_children_and_its_parent_holds_the_best_one(run_cli, tracking_uri, tmp_path):
    done = run_cli(
        "experiments.train",
        "+experiment=search",
        "hydra.sweeper.n_trials=3",
        "trainer.epochs=2",
        "mlflow.log_model=false",
        "reg.dropout=interval(0.7,1.6)",  # the seeded sampler's second trial draws 1.01, which is refused
        "+mlflow.tags.api_token=choice(SEARCH-TOKEN-1,SEARCH-TOKEN-2)",  # a secret searched over
    )
    assert done.returncode == 0, done.stderr[-3000:]  # the search went on past the failed trial
    parent, children = parent_and_children(all_runs(tracking_uri))
    assert len(children) == 2 and all(child.info.status == "FINISHED" for child in children)
    assert (parent.data.metrics["jobs"], parent.data.metrics["jobs_failed"]) == (3, 1)
    assert parent.info.status == "FAILED"  # as any sweep with a failed job
    said = done.stdout + done.stderr
    assert "Failed experiment: reg.dropout=1.011004654338743: expected a number in [0, 1)" in said
    best = min(children, key=lambda child: child.data.metrics["best_val_loss"])
    assert parent.data.metrics["search.best_value"] == pytest.approx(best.data.metrics["best_val_loss"])
    searched = dict(part.split("=", 1) for part in parent.data.tags["search.best_params"].split())
    for key in ("optimizer.learning_rate", "reg.l2", "reg.dropout"):
        assert float(searched[key]) == pytest.approx(float(best.data.params[key]))
    client = mlflow.MlflowClient(tracking_uri)
    assert "optimization_results.yaml" in {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert searched["+mlflow.tags.api_token"] == "[redacted]" and "Best parameters: {" in said
    seen = [said, *(str(run.data.tags) + str(run.data.params) + run.info.run_name for run in (parent, *children))]
    seen += [artifact_texts(client, run.info.run_id, tmp_path / run.info.run_id) for run in (parent, *children)]
    seen += [path.read_text(errors="replace") for path in (tmp_path / "multirun").rglob("*.yaml")]
    assert "SEARCH-TOKEN" not in "\n".join(seen)
