"""Reproducible runs: `mlflow run`, deterministic training, experiments.reproduce --verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import tomllib
import yaml

from experiments.cli import expand_quoted_option
from experiments.reproduce import main as reproduce
from tests.conftest import ROOT, all_runs


def test_quoted_overrides_become_separate_arguments():
    argv = ["train.py", "--overrides", "model=cnn reg=[l2,dropout] mlflow.run_name='my run'", "trainer.epochs=2"]
    assert expand_quoted_option(argv, "--overrides") == [
        "train.py",
        "model=cnn",
        "reg=[l2,dropout]",
        "mlflow.run_name=my run",
        "trainer.epochs=2",
    ]
    assert expand_quoted_option(["train.py", "--overrides", ""], "--overrides") == ["train.py"]
    assert expand_quoted_option(["train.py", "reg=l2"], "--overrides") == ["train.py", "reg=l2"]


def test_python_env_has_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    python_env = yaml.safe_load((ROOT / "python_env.yaml").read_text())["dependencies"]
    assert sorted(python_env) == sorted(project)


def test_unknown_run_id_is_one_line(tracking_uri, capsys):
    assert reproduce(["0123456789abcdef", "--verify"]) == 2
    assert capsys.readouterr().err.strip() == f"error: no run 0123456789abcdef in the tracking store {tracking_uri}"


@pytest.mark.parametrize("tolerance", ["-1", "nan", "tiny"])
def test_a_tolerance_nothing_can_meet_is_refused_before_the_rerun(tracking_uri, capsys, tolerance):
    with pytest.raises(SystemExit) as refused:
        reproduce(["0123456789abcdef", "--verify", "--tolerance", tolerance])
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"argument --tolerance: {tolerance!r}: expected a number >= 0")
    assert all_runs(tracking_uri) == []


def test_run_without_logged_config(tracking_uri, capsys):
    client = mlflow.MlflowClient(tracking_uri)
    run = client.create_run(client.create_experiment("bare"))
    assert reproduce([run.info.run_id]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: run {run.info.run_id} has no logged config (hydra/overrides.yaml)"
    )


def test_unreachable_store(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    assert reproduce(["0123456789abcdef", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot reach the tracking store http://127.0.0.1:9") and "\n" not in error


@pytest.mark.slow
def test_mlflow_run_makes_exactly_one_run(tmp_path, tracking_uri):
    if shutil.which("git") is None:
        pytest.fail("git is needed by `mlflow run` on a local project")
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    overrides = f"trainer.epochs=2 reg=l2 trainer.verbose=0 hydra.run.dir={tmp_path / 'out'}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(ROOT),
            "--env-manager",
            "local",
            "--experiment-name",
            "projects",
            "-P",
            f"overrides={overrides}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = all_runs(tracking_uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["reg.l2"] == "0.0001" and run.data.params["trainer.epochs"] == "2"
    assert len(mlflow.MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val_loss")) == 2
    assert run.data.tags["mlflow.project.entryPoint"] == "main"


def train(run_cli, *overrides):
    done = run_cli("experiments.train", "trainer.epochs=2", "trainer.verbose=0", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_same_seed_reproduces_exactly_and_a_tampered_original_fails(
    run_cli, tracking_uri, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    train(run_cli, "trainer.seed=1")
    original = all_runs(tracking_uri)[0]
    client = mlflow.MlflowClient(tracking_uri)
    note = tmp_path / "reproduce.txt"
    note.write_text(open(client.download_artifacts(original.info.run_id, "reproduce.txt")).read())
    assert "python -m experiments.train trainer.epochs=2 trainer.verbose=0 trainer.seed=1" in note.read_text()
    assert "mlflow run . --env-manager local -P 'overrides=" in note.read_text()

    assert reproduce([original.info.run_id, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verified: every metric within 1e-06" in out and "val_loss" in out
    copies = [r for r in all_runs(tracking_uri) if r.data.tags.get("reproduces") == original.info.run_id]
    assert len(copies) == 1 and copies[0].info.status == "FINISHED"

    # Claim in the original's logged overrides that it used seed 2: the re-run (seed 2) must differ.
    claimed = tmp_path / "hydra" / "overrides.yaml"
    claimed.parent.mkdir()
    claimed.write_text(yaml.safe_dump(["trainer.epochs=2", "trainer.verbose=0", "trainer.seed=2"]))
    client.log_artifact(original.info.run_id, str(claimed), "hydra")
    assert reproduce([original.info.run_id, "--verify"]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced" in out and "max_abs_diff" in out and "val_loss" in out
    rerun = [r for r in all_runs(tracking_uri) if r.data.params["trainer.seed"] == "2"]
    assert len(rerun) == 1 and rerun[0].data.tags["reproduces"] == original.info.run_id
