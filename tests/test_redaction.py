"""The one redaction rule: secret keys and URL passwords never leave the process."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from plugins import MLflowCallback
from plugins.errors import describe
from plugins.params import to_params
from plugins.redaction import (
    RedactingFilter,
    install_log_redaction,
    is_secret,
    one_line,
    redact,
    redact_override,
    redact_text,
)
from plugins.sweep import record_search
from tests.conftest import artifact_texts

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


@pytest.mark.parametrize(
    ("text", "shown"),
    [  # Hydra escapes an override's colons in a -m sweep's job overrides and its launcher's lines
        (
            "mlflow.tracking_uri=postgresql\\://u\\:PW-1@db:5432/x",
            "mlflow.tracking_uri=postgresql\\://u\\:[redacted]@db:5432/x",
        ),
        (
            "\t#0 : reg=l2 +mlflow.tags.db=mysql\\://u\\:PW-1@h/x",
            "\t#0 : reg=l2 +mlflow.tags.db=mysql\\://u\\:[redacted]@h/x",
        ),
        # a dict-valued override, as typed and as Hydra or Python print it
        ("+db={password: PW-1, host: h}", "+db={password: [redacted], host: h}"),
        ("+db={'password': 'PW 1', host: h}", "+db={'password': [redacted], host: h}"),
        (
            "Best parameters: {'db.password': 'PW-1', 'reg.l2': 0.1}",
            "Best parameters: {'db.password': [redacted], 'reg.l2': 0.1}",
        ),
        (
            "runtime_env={env_vars: {MLFLOW_TRACKING_PASSWORD: PW-1}}",
            "runtime_env={env_vars: {MLFLOW_TRACKING_PASSWORD: [redacted]}}",
        ),
        ("+db={tokens: [PW-1, PW-2], host: h}", "+db={tokens: [redacted], host: h}"),
        (
            "Best parameters: {'reg.l2': 0.1, '+mlflow.tags.api_token': 'PW-1'}",
            "Best parameters: {'reg.l2': 0.1, '+mlflow.tags.api_token': [redacted]}",
        ),
        ("reg=[l2,dropout] trainer.epochs=3", "reg=[l2,dropout] trainer.epochs=3"),
    ],
)
def test_every_form_a_secret_takes_in_text_is_redacted(text, shown):
    assert redact_text(text) == shown
    assert redact_override(text) == shown


def test_a_name_read_back_from_a_store_cannot_forge_a_line():
    assert one_line("cnn-l2\nerror: forged\r\x1b[2J") == "cnn-l2?error: forged??[2J"
    assert one_line("from http://a:PW@h") == "from http://a:[redacted]@h"


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


def test_log_lines_stay_redacted_after_logging_is_configured_anew():
    """Hydra's launchers configure logging again (new handlers) right before they log each job's
    overrides, and Hydra writes a failed job's overrides straight to stderr."""
    import io

    original, console = logging.getLogRecordFactory(), (sys.stdout, sys.stderr)
    printed, stderr = io.StringIO(), io.StringIO()
    launcher = logging.getLogger("a launcher")
    handler = logging.StreamHandler(printed)
    try:
        sys.stderr = stderr
        install_log_redaction()
        install_log_redaction()  # once is enough; twice changes nothing
        launcher.addHandler(handler)  # a handler made after the redaction was installed
        launcher.setLevel(logging.INFO)
        launcher.info("\t#%d : %s", 0, "+db={password:PW-1,host:h} x=postgresql\\://u\\:PW-2@h")
        sys.stderr.write("Error executing job with overrides: ['+mlflow.tags.api_token=PW-3']\n")  # as Hydra does
    finally:
        launcher.removeHandler(handler)
        logging.setLogRecordFactory(original)
        sys.stdout, sys.stderr = console
    assert printed.getvalue() == "\t#0 : +db={password:[redacted],host:h} x=postgresql\\://u\\:[redacted]@h\n"
    assert stderr.getvalue() == "Error executing job with overrides: ['+mlflow.tags.api_token=[redacted]\n"


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


def test_a_search_over_a_secret_keeps_it_out_of_the_parent_and_its_files(tracking_uri, tmp_path):
    results = tmp_path / "optimization_results.yaml"
    results.write_text(
        "name: optuna\nbest_params:\n  reg.l2: 0.001\n  +mlflow.tags.api_token: TOKEN-A\n  db.password: PW-B\n"
        "best_value: 0.25\n"
    )
    client = mlflow.MlflowClient(tracking_uri)
    parent = client.create_run(client.create_experiment("search")).info.run_id
    record_search(client, parent, results)
    run = client.get_run(parent)
    assert run.data.tags["search.best_params"] == (
        "reg.l2=0.001 +mlflow.tags.api_token=[redacted] db.password=[redacted]"
    )
    assert run.data.metrics["search.best_value"] == 0.25
    stored = Path(client.download_artifacts(parent, "optimization_results.yaml", str(tmp_path / "back"))).read_text()
    for text in (stored, results.read_text()):  # the parent's copy and the one left in the sweep's folder
        assert "TOKEN-A" not in text and "PW-B" not in text and "reg.l2: 0.001" in text
