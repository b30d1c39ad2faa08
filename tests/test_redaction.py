"""The one redaction rule: secret keys and URL passwords never leave the process."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from plugins import MLflowCallback
from plugins.errors import describe
from plugins.params import to_params
from plugins.redaction import RedactingFilter, is_secret, redact, redact_override, redact_text

URI = "http://alice:PASS-123@127.0.0.1:5000"


def test_secret_keys_by_their_last_part():
    assert all(is_secret(key) for key in ("db.password", "mlflow.tags.api_key", "token", "aws_secret", "credentials"))
    assert not any(is_secret(key) for key in ("model.kernel_size", "monitor", "trainer.seed", "tracking_uri"))


def test_a_url_s_password_is_redacted_wherever_it_appears():
    assert redact_text(f"cannot reach {URI}/api/2.0 (refused)") == (
        "cannot reach http://alice:[redacted]@127.0.0.1:5000/api/2.0 (refused)"
    )
    assert redact_text("postgresql://bob:pw@db:5432/mlflow and https://x.org/a@b") == (
        "postgresql://bob:[redacted]@db:5432/mlflow and https://x.org/a@b"
    )
    assert redact_text("http://alice@host:1") == "http://alice@host:1"  # a user name alone is no secret
    assert describe(ConnectionError(f"HTTPConnectionPool for {URI}\nMore")) == (
        "ConnectionError: HTTPConnectionPool for http://alice:[redacted]@127.0.0.1:5000"
    )


def test_configs_overrides_and_params_go_through_the_same_rule():
    config = {"mlflow": {"tracking_uri": URI, "tags": {"api_key": "abc", "team": "vision"}}, "db": {"password": 1}}
    assert redact(config) == {
        "mlflow": {
            "tracking_uri": "http://alice:[redacted]@127.0.0.1:5000",
            "tags": {"api_key": "[redacted]", "team": "vision"},
        },
        "db": {"password": "[redacted]"},
    }
    assert redact_override("+mlflow.tags.password=hunter2") == "+mlflow.tags.password=[redacted]"
    assert redact_override(f"mlflow.tracking_uri={URI}") == "mlflow.tracking_uri=http://alice:[redacted]@127.0.0.1:5000"
    assert redact_override("reg=l2") == "reg=l2"
    params = {param.key: param.value for param in to_params({"mlflow.tracking_uri": URI, "api_token": "t"})}
    assert params == {"mlflow.tracking_uri": "http://alice:[redacted]@127.0.0.1:5000", "api_token": "[redacted]"}


def test_log_lines_are_redacted_whoever_writes_them():
    record = logging.LogRecord(
        "hydra",
        logging.INFO,
        __file__,
        1,
        "\t#%d : %s",
        (0, f"reg=l2 +mlflow.tags.api_key=abc mlflow.tracking_uri={URI}"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == (
        "\t#0 : reg=l2 +mlflow.tags.api_key=[redacted] mlflow.tracking_uri=http://alice:[redacted]@127.0.0.1:5000"
    )


def test_the_callback_s_tags_and_run_name_are_redacted(tracking_uri):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    tracker = MLflowCallback(
        log_model=False, run_name=f"job from {URI}", tags={"api_key": "abc", "team": "vision", "source": URI}
    )
    model.fit(np.zeros((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0, callbacks=[tracker])
    run = mlflow.MlflowClient(tracking_uri).get_run(tracker.run_id)
    assert run.data.tags["api_key"] == "[redacted]" and run.data.tags["team"] == "vision"
    assert run.data.tags["source"] == "http://alice:[redacted]@127.0.0.1:5000"
    assert run.info.run_name == "job from http://alice:[redacted]@127.0.0.1:5000"


def artifact_texts(client: mlflow.MlflowClient, run_id: str, folder) -> str:
    """Every text file of a run's artifacts, read back, joined."""
    local = client.download_artifacts(run_id, "", str(folder))
    return "\n".join(
        path.read_text(errors="replace")
        for path in Path(local).rglob("*")
        if path.is_file() and path.suffix in (".yaml", ".txt", ".csv")
    )


@pytest.mark.slow
def test_secrets_given_on_the_command_line_never_leave_the_process(tmp_path, run_cli, mlflow_server):
    """A tracking URI with credentials works (MLflow's client sends them as basic auth) and, like
    secret tags, is redacted in params, tags, artifacts and everything printed."""
    with_password = mlflow_server.replace("http://", "http://alice:PASS-123@")
    done = run_cli(
        "experiments.train",
        "callbacks=basic",
        "trainer.epochs=1",
        "trainer.verbose=0",
        f"mlflow.tracking_uri={with_password}",
        "+mlflow.tags.api_key=S3CRET-KEY",
        "+mlflow.tags.password=S3CRET-PW",
        "+mlflow.tags.team=vision",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("keras-experiments").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["api_key"] == run.data.tags["password"] == "[redacted]" and run.data.tags["team"] == "vision"
    assert "mlflow.tracking_uri" not in run.data.params  # where it is logged is no param; hydra/config.yaml has it
    seen = "\n".join(
        [
            done.stdout,
            done.stderr,
            str(run.data.params),
            str(run.data.tags),
            run.info.run_name,
            artifact_texts(client, run.info.run_id, tmp_path / "artifacts"),
            *(  # the local output folder: Hydra's own .hydra/ files and its log
                path.read_text(errors="replace")
                for path in (tmp_path / "outputs").rglob("*")
                if path.suffix in (".yaml", ".log", ".txt", ".csv")
            ),
        ]
    )
    assert "mlflow.tags.team=vision" in seen and "experiment_name: keras-experiments" in seen
    assert f"tracking_uri: {mlflow_server.replace('http://', 'http://alice:[redacted]@')}" in seen
    leaks = [line for line in seen.splitlines() if any(secret in line for secret in ("PASS-123", "S3CRET"))]
    assert leaks == []


@pytest.mark.slow
def test_a_tracking_uri_with_credentials_that_does_not_answer_is_one_line_without_the_password(run_cli):
    done = run_cli(
        "experiments.train", "mlflow.wait_for_server_s=0", "mlflow.tracking_uri=http://alice:PASS-123@127.0.0.1:9"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: the tracking server http://alice:[redacted]@127.0.0.1:9 does not answer "
            "([Errno 111] Connection refused)"
        )
    )
    assert "PASS-123" not in done.stdout + done.stderr
