"""A run's logged overrides come back from the store as data: only the project's own keys and groups
are re-applied by resume=RUN_ID and experiments.reproduce."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

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
    assert checked_overrides(RUN, [override]).kept == [override]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("callbacks.backup_and_restore.backup_dir=/home/you/work", "callbacks.backup_and_restore.backup_dir"),
        ("callbacks.tensorboard.log_dir=/home/you/.ssh", "callbacks.tensorboard.log_dir"),
        ("callbacks.model_checkpoint.filepath=../../../x.keras", "callbacks.model_checkpoint.filepath"),
        ("callbacks.csv_logger.filename=/home/you/notes.txt", "callbacks.csv_logger.filename"),
        ("callbacks.tensorboard={log_dir: /home/you/.ssh}", "callbacks.tensorboard"),
        ("mlflow.tracking_uri=http://elsewhere:5000", "mlflow.tracking_uri"),
        ("hydra.job_logging.handlers.file.filename=/home/you/x.pth", "hydra.job_logging.handlers.file.filename"),
        ("hydra.run.dir=/home/you", "hydra.run.dir"),
        ("hydra/launcher=ray", "hydra/launcher"),
        ("mlflow.registered_model_name=theirs", "mlflow.registered_model_name"),
        ("trainer.threads=999999", "trainer.threads"),
        ("trainer.verbose=2", "trainer.verbose"),
        ("data.path=/home/you/private.npz", "data.path"),
        ("data.path=../private.npz", "data.path"),
    ],
)
def test_where_to_write_send_or_log_is_left_out_and_named(override, key):
    """This command's own settings stay; the warning names the keys, never a value (it may be a secret)."""
    checked = checked_overrides(RUN, ["model=mlp", override])
    assert checked.kept == ["model=mlp"] and checked.left_out == [key]
    assert checked.warning(RUN) == f"run {RUN}: not re-applied, this command's own settings are used instead: {key}"
    assert checked_overrides(RUN, ["model=mlp"]).warning(RUN) is None


def test_a_data_file_below_the_working_folder_is_re_applied():
    assert checked_overrides(RUN, ["data=npz", "data.path=data/digits.npz"]).kept == [
        "data=npz",
        "data.path=data/digits.npz",
    ]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("+callbacks.evil={_target_: pathlib.Path.touch, self: /tmp/owned}", "build an object"),
        ("callbacks.early_stopping._target_=os.system", "build an object"),
        ("model={_target_: builtins.exec, _args_: [x]}", "build an object"),
        ("model.units=[{_partial_: true}]", "build an object"),
        ("mlflow.run_name=${oc.env:AWS_SECRET_ACCESS_KEY}", "call a resolver"),
        ("mlflow.run_name=${mlflow.tracking_uri}", "copy another setting"),
        ("+mlflow.tags.note=${hydra.runtime.output_dir}", "call a resolver"),
        ("mlflow.run_name=cnn\nforged log line", "control character"),
        ("+mlflow.tags.note=a\rb", "control character"),
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
    assert str(refused.value).startswith(
        f"run {RUN}: its logged override {override[:40]}".replace("\n", "?").replace("\r", "?")
    )
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)
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


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: a decoy's state, before and after."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_a_colleague_s_edited_run_reaches_no_file_credential_or_console_of_whoever_resumes_or_reproduces_it(
    tracking_uri, tmp_path, run_cli, request_recorder
):
    """Edited in the shared store: the stored config's and overrides' output paths point at a user's
    folder holding a key, the tracking URI at a server that records what it is sent, Hydra's log file
    at a .pth file. Resume and reproduce both train, write only under their own output folders,
    upload none of the user's files and send the store's password nowhere."""
    recorder, requests = request_recorder
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (home / "notes.txt").write_text("my notes\n")
    (home / "site.pth").write_text("")
    before = listing(home)
    done = run_cli("experiments.train", "model=mlp", "callbacks=basic", "trainer.epochs=1", "trainer.verbose=0")
    assert done.returncode == 0, done.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri)
    (run,) = all_runs(tracking_uri)
    run_id = run.info.run_id
    paths = {
        "callbacks.backup_and_restore.backup_dir": home,
        "callbacks.tensorboard.log_dir": home / ".ssh",
        "callbacks.model_checkpoint.filepath": f"{tmp_path}/outputs/../../{tmp_path.name}/home/notes.txt",
        "callbacks.csv_logger.filename": home / "notes.txt",
    }
    stored = Path(client.download_artifacts(run_id, "hydra/config.yaml", str(tmp_path / "stored")))
    config = yaml.safe_load(stored.read_text())
    for key, path in paths.items():
        _, name, arg = key.split(".")
        config["callbacks"][name][arg] = str(path)
    client.log_text(run_id, yaml.safe_dump(config), "hydra/config.yaml")
    edited = ["model=mlp", "callbacks=basic", "trainer.epochs=1", f"mlflow.tracking_uri={recorder}"]
    edited += [f"{key}={path}" for key, path in paths.items()]
    edited += [f"hydra.job_logging.handlers.file.filename={home / 'site.pth'}", "hydra.job.name=x"]
    client.log_text(run_id, yaml.safe_dump(edited), "hydra/overrides.yaml")
    client.set_terminated(run_id, "KILLED")
    secret = {"MLFLOW_TRACKING_USERNAME": "you", "MLFLOW_TRACKING_PASSWORD": "YOUR-PASSWORD"}

    resumed = run_cli("experiments.train", f"resume={run_id}", "trainer.epochs=2", "trainer.verbose=0", env=secret)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert f"run {run_id}: not re-applied, this command's own settings are used instead: mlflow.tracking_uri, " in said
    assert f"no local backup of run {run_id} (this machine holds no backup of it): continuing from its best" in said
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [0, 1]

    reproduced = run_cli("experiments.reproduce", run_id, env=secret)
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    assert f"warning: run {run_id}: not re-applied" in reproduced.stderr

    assert listing(home) == before  # not one byte or file of the user's changed
    assert requests == []  # nothing was sent to the recorder, credentials or not
    for each in all_runs(tracking_uri):
        uploaded = [item.path for item in client.list_artifacts(each.info.run_id, "tensorboard")]
        assert uploaded and not any("id_rsa" in path for path in uploaded)
        assert not any("YOUR-PASSWORD" in str(value) for value in (each.data.params, each.data.tags))
    assert "YOUR-PASSWORD" not in said + reproduced.stdout + reproduced.stderr


@pytest.mark.slow
def test_reproduce_takes_what_the_run_cannot_give_from_its_own_command(tracking_uri, tmp_path, capsys):
    """A run's data file outside the working folder is left out; the user names theirs after the run id."""
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("keras-experiments")).info.run_id
    client.log_text(
        run_id, "- data=npz\n- data.path=/somewhere/theirs.npz\n- trainer.epochs=1\n", "hydra/overrides.yaml"
    )
    client.set_terminated(run_id, "FINISHED")
    mine = tmp_path / "mine.npz"  # not there: the re-run refuses it before TensorFlow loads
    assert reproduce([run_id, "--tracking-uri", tracking_uri, f"data.path={mine}"]) == 2
    said = capsys.readouterr()
    assert f"warning: run {run_id}: not re-applied, this command's own settings are used instead: data.path" in said.err
    assert said.err.strip().splitlines()[-1] == (
        f"error: the re-run of {run_id} failed (command: -m experiments.train data=npz trainer.epochs=1 "
        f"data.path={mine} mlflow.experiment_name=keras-experiments +mlflow.tags.reproduces={run_id})"
    )
