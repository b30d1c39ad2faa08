"""A team's tracking server, for real: PostgreSQL, `mlflow server` with proxied artifacts and MLflow's
basic auth, on 127.0.0.1 (docs/team-server.md). One user trains a sweep, compares it, reproduces a
run and resumes one stopped by SIGTERM; another without EDIT is refused in one line; no password
reaches a run or an output line."""

from __future__ import annotations

import signal
from pathlib import Path

import mlflow
import pytest
from mlflow.server import get_app_client

from tests.conftest import free_port, stop_mlflow_server
from tests.team_server import ADMIN_PASSWORD, start_auth_server, start_postgres, stop_postgres
from tests.test_reliability import TRAIN, start_training, wait_for_epoch

pytestmark = pytest.mark.slow
PASSWORDS = {"alice": "alice-Pw-5519-x", "bob": "bob-Pw-2208-xyz"}


@pytest.fixture
def team_server(tmp_path):
    postgres = start_postgres(free_port(), ["mlflow", "mlflow_auth"])
    try:
        server = start_auth_server(tmp_path, port := free_port(), postgres)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_mlflow_server(server)
    finally:
        stop_postgres(postgres)


def signed_in(uri: str, user: str) -> dict[str, str]:
    password = ADMIN_PASSWORD if user == "admin" else PASSWORDS[user]
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def test_a_team_works_on_a_postgresql_server_with_auth(team_server, tmp_path, run_cli, monkeypatch):
    for key, value in signed_in(team_server, "admin").items():
        monkeypatch.setenv(key, value)
    admin, users = mlflow.MlflowClient(team_server), get_app_client("basic-auth", tracking_uri=team_server)
    for user, password in PASSWORDS.items():
        users.create_user(user, password)
    experiment = admin.create_experiment("team")
    users.grant_user_permission("alice", "experiment", experiment, "EDIT")
    alice, said = signed_in(team_server, "alice"), []

    sweep = run_cli("experiments.train", "-m", "reg=none,l2", "trainer.epochs=2", "trainer.verbose=0",
                    "mlflow.experiment_name=team", env=alice)  # fmt: skip
    said.append(sweep.stdout + sweep.stderr)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = admin.search_runs([experiment])
    (parent,) = [run for run in runs if run.data.tags.get("sweep") == "true"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [run.info.status for run in [parent, *children]] == ["FINISHED"] * 3
    for child in children:
        assert [point.step for point in admin.get_metric_history(child.info.run_id, "val_loss")] == [0, 1]
        files = {item.path for item in admin.list_artifacts(child.info.run_id)}
        assert "history.csv" in files and "model" not in files  # the model is stored once: the logged model
    models = admin.search_logged_models([experiment])
    assert sorted((model.name, model.source_run_id, str(model.status)) for model in models) == sorted(
        ("model", child.info.run_id, "READY") for child in children
    )
    assert parent.data.tags["mlflow.user"] == "alice" and "comparison" in {
        item.path for item in admin.list_artifacts(parent.info.run_id)
    }

    compared = run_cli("experiments.compare", "--experiment", "team", "--output", str(tmp_path / "report"), env=alice)
    said.append(compared.stdout + compared.stderr)
    assert compared.returncode == 0 and f"2 runs of sweep {parent.info.run_id}" in compared.stdout

    reproduced = run_cli("experiments.reproduce", children[0].info.run_id, "--verify", env=alice)
    said.append(reproduced.stdout + reproduced.stderr)
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]

    process, log = start_training(tmp_path, "trainer.epochs=4", "mlflow.experiment_name=team",
                                  "mlflow.run_name=cut", env=alice)  # fmt: skip
    wait_for_epoch(log, 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    log.seek(0)
    said.append(log.read())
    (cut,) = admin.search_runs([experiment], "attributes.run_name = 'cut'")
    assert cut.info.status == "KILLED"
    resumed = run_cli(*TRAIN, f"resume={cut.info.run_id}", env=alice)
    said.append(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert admin.get_run(cut.info.run_id).info.status == "FINISHED"
    assert sorted(point.step for point in admin.get_metric_history(cut.info.run_id, "val_loss")) == [0, 1, 2, 3]

    refused = run_cli("experiments.train", "trainer.epochs=1", "mlflow.experiment_name=team",
                      env=signed_in(team_server, "bob"))  # fmt: skip
    said.append(refused.stdout + refused.stderr)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: mlflow.experiment_name=team: user bob has READ on experiment {experiment}; a run needs EDIT; "
        f"ask its owner or an admin of {team_server} to grant it; nothing was trained"
    )

    wrong = {**signed_in(team_server, "bob"), "MLFLOW_TRACKING_PASSWORD": "not-bobs-password"}
    unknown = run_cli("experiments.train", "trainer.epochs=1", "mlflow.experiment_name=team", env=wrong)
    said.append(unknown.stdout + unknown.stderr)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1] == (
        f"error: mlflow.tracking_uri={team_server}: the server refused the credentials (HTTP 401 Unauthorized); "
        "give a user it knows in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; nothing was trained"
    )

    every_run = admin.search_runs([experiment])
    assert len(every_run) == 5  # the sweep's parent and jobs, the reproduction, the resumed run: none of bob's
    passwords = [ADMIN_PASSWORD, *PASSWORDS.values()]
    for run in every_run:
        recorded = [run.info.run_name, *run.data.params.values(), *run.data.tags.values()]
        files = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, dst_path=str(tmp_path / "a" / run.info.run_id), tracking_uri=team_server
            )
        )
        recorded += [path.read_bytes().decode("latin-1") for path in files.rglob("*") if path.is_file()]
        assert not [password for password in passwords for text in recorded if password in text], run.info.run_name
    assert not [password for password in passwords for text in said if password in text]
