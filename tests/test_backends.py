"""Keras 3's other backends: the callback's behaviour tests, the runner and ``reproduce --verify`` on
JAX and PyTorch, with TensorFlow not installed (hidden: tests/hidden_packages.py); and what the runner
says where a backend cannot be had."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from experiments import backends
from experiments.checks import ConfigError
from experiments.reproduce import main as reproduce
from tests.conftest import ROOT, all_runs
from tests.hidden_packages import environment_without

OTHER_BACKENDS = ("jax", "torch")
TENSORFLOW = ("tensorflow", "tensorboard", "tf_keras")
# Written for any backend: the callback's behaviour, and the runner's NumPy batches.
BEHAVIOUR_TESTS = [ROOT / "tests" / "test_callback_on_backends.py", ROOT / "tests" / "test_batches.py"]


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory) -> dict[str, str]:
    return environment_without(TENSORFLOW, tmp_path_factory.mktemp("without-tensorflow"))


def test_each_job_of_a_sweep_gets_its_own_cores():
    assert [backends.cores_for(1, slot, [0, 1, 2, 3]) for slot in range(5)] == [{0}, {1}, {2}, {3}, {0}]
    assert [backends.cores_for(2, slot, [4, 5, 6, 7]) for slot in range(3)] == [{4, 5}, {6, 7}, {4, 5}]
    assert backends.cores_for(8, 3, [0, 1]) == {0, 1}  # more threads than cores: all of them


def test_an_unknown_backend_is_refused_before_keras_loads(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "cntk")
    with pytest.raises(ConfigError, match=r"^KERAS_BACKEND=cntk: expected one of tensorflow, jax, torch$"):
        backends.load_training()


def test_reproduce_takes_only_a_known_backend_from_the_store(tracking_uri, capsys):
    with mlflow.start_run() as run:
        mlflow.log_param("keras.backend", "$(curl evil)")
        mlflow.log_dict(["trainer.epochs=1"], "hydra/overrides.yaml")
    assert reproduce([run.info.run_id]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: run {run.info.run_id} names keras.backend='$(curl evil)': expected one of tensorflow, jax, torch"
    )
    assert len(all_runs(tracking_uri)) == 1  # nothing re-ran


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_callback_behaves_the_same_without_tensorflow(backend, without_tensorflow, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n0", "-q", "-p", "no:cacheprovider", *map(str, BEHAVIOUR_TESTS)],
        env={**without_tensorflow, "KERAS_BACKEND": backend},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tests = sum(len(re.findall(r"^def test_", path.read_text(), flags=re.MULTILINE)) for path in BEHAVIOUR_TESTS)
    assert done.returncode == 0, done.stdout[-4000:]
    assert re.search(rf"\b{tests} passed\b", done.stdout.splitlines()[-1]), done.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_runner_trains_and_reproduce_verifies_without_tensorflow(
    backend, without_tensorflow, run_cli, tracking_uri
):
    trained = run_cli(
        "experiments.train",
        "model=mlp",
        "trainer.epochs=2",
        "trainer.verbose=0",
        "trainer.threads=1",
        env={**without_tensorflow, "KERAS_BACKEND": backend},
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "callbacks.tensorboard: no TensorBoard files" in trained.stdout + trained.stderr
    (run,) = all_runs(tracking_uri)
    assert run.info.status == "FINISHED" and run.info.run_name.startswith(f"mlp-none ({backend})")
    assert run.data.params["keras.backend"] == backend and run.data.metrics["test_examples"] == 270
    note = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/reproduce.txt")).read_text()
    assert f"KERAS_BACKEND={backend} python -m experiments.train model=mlp" in note
    assert f"KERAS_BACKEND={backend} mlflow run . " in note
    # No KERAS_BACKEND here: the re-run's backend is the one the run recorded (TensorFlow, the
    # default, is not installed).
    verified = run_cli("experiments.reproduce", run.info.run_id, "--verify", env=without_tensorflow)
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert "verified: every metric within 1e-06" in verified.stdout
    (copy,) = [found for found in all_runs(tracking_uri) if found.data.tags.get("reproduces") == run.info.run_id]
    assert copy.data.params["keras.backend"] == backend


@pytest.mark.slow
def test_a_backend_that_is_not_installed_is_one_line(tmp_path, run_cli, tracking_uri):
    without_torch = environment_without(("torch",), tmp_path / "without-torch")
    refused = run_cli("experiments.train", "trainer.epochs=1", env={**without_torch, "KERAS_BACKEND": "torch"})
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        'error: KERAS_BACKEND=torch: torch is not installed (install it: pip install -e ".[torch]")'
    )
    assert "Traceback" not in refused.stderr and all_runs(tracking_uri) == []
    with mlflow.start_run() as run:  # a colleague's run on PyTorch, to reproduce here
        mlflow.log_param("keras.backend", "torch")
        mlflow.log_dict(["trainer.epochs=1"], "hydra/overrides.yaml")
    refused = run_cli("experiments.reproduce", run.info.run_id, env=without_torch)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: run {run.info.run_id} trained on Keras' torch backend, which is not installed here "
        '(install it: pip install -e ".[torch]")'
    )
    assert len(all_runs(tracking_uri)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_of_two_processes_fitting_together_only_the_first_logs(backend, without_tensorflow, tracking_uri, tmp_path):
    with socket.socket() as probe:  # a free port on the loopback for the group's coordinator
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**without_tensorflow, "KERAS_BACKEND": backend}
    script = str(ROOT / "tests" / "distributed_fit.py")
    processes = [
        subprocess.Popen(
            [sys.executable, script, str(rank), str(port)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    said = [process.communicate(timeout=300)[0].strip().splitlines()[-1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    (run,) = all_runs(tracking_uri)
    assert said == [f"run {run.info.run_id}", "run None"]
    assert run.info.status == "FINISHED" and run.data.params["keras.backend"] == backend
