"""A run's logged overrides come back from the store as data: only the project's own keys and groups
are re-applied by resume=RUN_ID and experiments.reproduce."""

from __future__ import annotations

import mlflow
import pytest

from experiments.checks import ConfigError
from experiments.logged_overrides import checked_overrides
from experiments.reproduce import main as reproduce
from tests.conftest import all_runs

RUN = "0123456789abcdef"


@pytest.mark.parametrize(
    "override",
    [
        "model=cnn",
        "reg=[l2,dropout]",
        "reg.l2=1e-3",
        "+mlflow.tags.team=vision",
        "~callbacks.tensorboard",
        "+experiment=regularisation_study",
        "mlflow.run_name=${model.name}-x",
        "callbacks.reduce_lr_on_plateau=null",
    ],
)
def test_the_project_s_own_keys_and_groups_are_re_applied(override):
    assert checked_overrides(RUN, [override]) == [override]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("+callbacks.evil={_target_: pathlib.Path.touch, self: /tmp/owned}", "build an object"),
        ("callbacks.early_stopping._target_=os.system", "build an object"),
        ("model={_target_: builtins.exec, _args_: [x]}", "build an object"),
        ("model.units=[{_partial_: true}]", "build an object"),
        ("mlflow.run_name=${oc.env:AWS_SECRET_ACCESS_KEY}", "call a resolver"),
        ("+trainer.anything=1", "adds a key the project does not define"),
        ("++hydra.job.chdir=true", "adds a key the project does not define"),
        ("reg=[l2,backdoor]", "reg has no option backdoor"),
        ("model=../../etc/passwd", "model has no option ../../etc/passwd"),
        ("reg=l1,l2", "a sweep"),
        ("not an override", "not a Hydra override"),
    ],
)
def test_anything_else_is_refused_naming_the_run_and_the_override(override, reason):
    with pytest.raises(ConfigError) as refused:
        checked_overrides(RUN, ["model=cnn", override])
    assert str(refused.value).startswith(f"run {RUN}: its logged override {override[:40]}")
    assert reason in str(refused.value)


def test_a_logged_override_that_is_no_text_is_refused():
    with pytest.raises(ConfigError, match="is not an override"):
        checked_overrides(RUN, [{"_target_": "os.system"}])


def tampered_run(tracking_uri, marker, status: str) -> tuple[mlflow.MlflowClient, str]:
    """A run whose hydra/overrides.yaml someone edited to have Hydra touch ``marker`` when re-applied."""
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("keras-experiments")).info.run_id
    client.log_text(
        run_id,
        f"- trainer.epochs=1\n- '+callbacks.evil={{_target_: pathlib.Path.touch, self: {marker}}}'\n",
        "hydra/overrides.yaml",
    )
    client.set_terminated(run_id, status)
    return client, run_id


def test_reproduce_refuses_a_tampered_run_before_anything_runs(tracking_uri, tmp_path, capsys):
    marker = tmp_path / "owned"
    client, run_id = tampered_run(tracking_uri, marker, "FINISHED")
    assert reproduce([run_id, "--tracking-uri", tracking_uri]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: run {run_id}: its logged override +callbacks.evil=") and "not re-applied" in error
    assert not marker.exists() and len(all_runs(tracking_uri)) == 1  # nothing built, nothing re-run
    client.log_text(run_id, "{this: is, no: list}\n", "hydra/overrides.yaml")
    assert reproduce([run_id, "--tracking-uri", tracking_uri]) == 2
    assert "its hydra/overrides.yaml is not a list of overrides" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_refuses_a_tampered_run_in_one_line_and_builds_nothing(tracking_uri, tmp_path, run_cli):
    marker = tmp_path / "owned"
    client, run_id = tampered_run(tracking_uri, marker, "KILLED")
    done = run_cli("experiments.train", f"resume={run_id}", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: run {run_id}: its logged override +callbacks.evil={{_target_: pathlib.Path.touch")
    )
    assert not marker.exists()
    assert client.get_run(run_id).info.status == "KILLED" and len(all_runs(tracking_uri)) == 1
