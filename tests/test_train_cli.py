"""End to end through the CLI: a real run into a SQLite store under tmp_path."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest

from tests.conftest import ROOT, all_runs

pytestmark = pytest.mark.slow


def test_cnn_l2_trains_to_a_finished_run(run_cli, tracking_uri):
    done = run_cli(
        "experiments.train",
        "model=cnn",
        "reg=l2",
        "trainer.epochs=5",
        "trainer.batch_size=32",  # as conf/ has it: not in the name
        "trainer.verbose=0",
        "mlflow.log_system_metrics=true",
        env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = all_runs(tracking_uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cnn-l2 trainer.epochs=5"
    assert run.data.params["reg.l2"] == "0.0001" and run.data.params["model.name"] == "cnn"
    assert run.data.params["trainer.epochs"] == "5" and run.data.params["reg.name"] == "l2"
    assert "None" not in run.data.params.values() and not [key for key in run.data.params if "_target_" in key]
    assert "system/cpu_utilization_percentage" in run.data.metrics  # mlflow.log_system_metrics
    experiment = run.info.experiment_id
    page = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.info.run_id}?workflowType=machine_learning"
    assert page in done.stdout
    assert run.data.metrics["test_accuracy"] >= 0.85
    assert {"test_loss", "val_loss", "best_val_loss", "best_epoch"} <= set(run.data.metrics)
    assert (run.data.tags["model"], run.data.tags["reg"], run.data.tags["regularised"], run.data.tags["data"]) == (
        "cnn",
        "l2",
        "true",
        "digits",
    )
    client = mlflow.MlflowClient(tracking_uri)
    overrides = client.download_artifacts(run.info.run_id, "hydra/overrides.yaml")
    assert "reg=l2" in open(overrides).read()
    logs = {item.path for item in client.list_artifacts(run.info.run_id, "tensorboard")}
    assert logs == {"tensorboard/train", "tensorboard/validation"}  # TensorBoard's own folders
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [
        "digits-training",
        "digits-validation",
        "digits-test",
    ]


def test_tags_say_what_regularisation_the_model_has(run_cli, tracking_uri):
    done = run_cli(
        "experiments.train",
        "-m",
        "reg=none,[l2,dropout]",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "mlflow.log_model=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    children = {run.data.tags["reg"]: run for run in all_runs(tracking_uri) if "mlflow.parentRunId" in run.data.tags}
    assert set(children) == {"none", "l2+dropout"}
    assert children["none"].data.tags["regularised"] == "false"
    assert children["l2+dropout"].data.tags["regularised"] == "true"
    assert (
        children["l2+dropout"].data.params["reg.dropout"] == "0.3" and children["none"].data.params["reg.l2"] == "0.0"
    )
    names = {run.info.run_name for run in children.values()}
    assert names == {"cnn-none trainer.epochs=1", "cnn-l2+dropout trainer.epochs=1"}  # mlflow.* and verbose: unnamed


def test_the_runner_loads_tensorflow_only_after_the_input_is_checked():
    """Bad input is refused in about a second: importing the runner loads neither Keras nor TensorFlow
    (experiments/training.py, the one module of the runner that imports them, loads once the input is good)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, experiments.train; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
