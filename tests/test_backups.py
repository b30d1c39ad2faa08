"""A resume finds its run's Keras backup from this machine's own record, never from the run."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from experiments.backups import KERAS_STATE, forget_backup, record_backup, recorded_backup
from experiments.resume import prepare_resume
from tests.conftest import CONF

RUN = "0123456789abcdef0123456789abcdef"


def keras_backup(folder):
    """What BackupAndRestore leaves after an epoch: its metadata and the weights."""
    for name in KERAS_STATE:
        (folder / name).write_text("{}")


def test_a_recorded_backup_of_this_run_is_found(tmp_path, machine_state):
    backup = tmp_path / "outputs" / "backup"
    record_backup(RUN, str(backup))
    assert recorded_backup(RUN) == (None, f"its backup folder {backup} holds no whole backup")  # no epoch yet
    keras_backup(backup)
    assert recorded_backup(RUN) == (str(backup), None)
    (backup / "latest.weights.h5").unlink()  # a full disk cut its write: Keras would restore the epoch alone
    assert recorded_backup(RUN) == (None, f"its backup folder {backup} holds no whole backup")
    keras_backup(backup)
    assert (machine_state / "keras-mlflow-experiments" / "backups" / RUN).read_text() == str(backup)
    forget_backup(RUN)
    assert recorded_backup(RUN) == (None, "this machine holds no backup of it")


def test_a_folder_another_run_has_since_used_is_not_this_run_s(tmp_path):
    backup = tmp_path / "shared-backup"
    record_backup(RUN, str(backup))
    record_backup("another0run", str(backup))  # a user pointed two runs at one folder
    keras_backup(backup)
    assert recorded_backup(RUN) == (None, f"its backup folder {backup} holds another run's backup")
    assert recorded_backup("another0run") == (str(backup), None)


@pytest.mark.parametrize("run_id", ["../../etc/passwd", "a/b", "", "x" * 65])
def test_a_run_id_that_is_no_file_name_has_no_record(tmp_path, run_id):
    assert recorded_backup(run_id)[0] is None
    record_backup(run_id, str(tmp_path / "backup"))  # a warning, and nothing written
    assert not (tmp_path / "backup").exists() and not (tmp_path / "state").exists()


def test_an_unwritable_record_folder_warns_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "file"))  # a file where the folder would be
    record_backup(RUN, str(tmp_path / "backup"))
    assert "where its backup is could not be recorded" in caplog.text
    assert recorded_backup(RUN)[0] is None


def killed_run_with_tampered_paths(tracking_uri, decoys) -> str:
    """A KILLED run whose params and hydra/config.yaml someone edited to name a user's files."""
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("keras-experiments")).info.run_id
    paths = {
        "model_checkpoint": {"filepath": str(decoys / "id_rsa")},
        "tensorboard": {"log_dir": str(decoys)},
        "csv_logger": {"filename": str(decoys / "notes.txt")},
        "backup_and_restore": {"backup_dir": str(decoys)},
    }
    client.log_text(run_id, yaml.safe_dump({"callbacks": paths}), "hydra/config.yaml")
    client.log_text(run_id, "- trainer.epochs=3\n- callbacks.tensorboard.log_dir=/home/you\n", "hydra/overrides.yaml")
    client.log_param(run_id, "callbacks.model_checkpoint.filepath", str(decoys / "id_rsa"))
    client.set_terminated(run_id, "KILLED")
    return run_id


def test_a_resume_writes_only_to_this_command_s_folder(tracking_uri, tmp_path, compose_cfg, caplog):
    decoys = tmp_path / "home"
    decoys.mkdir()
    keras_backup(decoys)  # it even looks like a backup
    run_id = killed_run_with_tampered_paths(tracking_uri, decoys)
    cfg = compose_cfg(f"resume={run_id}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        resumed, point = prepare_resume(cfg, [f"resume={run_id}"])
    written = [
        OmegaConf.select(resumed, f"callbacks.{key}")
        for key in (
            "model_checkpoint.filepath",
            "tensorboard.log_dir",
            "csv_logger.filename",
            "backup_and_restore.backup_dir",
        )
    ]
    assert all(path.startswith(str(tmp_path / "output")) for path in written), written
    assert resumed.trainer.epochs == 3
    assert (point.backup_dir, point.no_backup) == (None, "this machine holds no backup of it")
    assert (
        f"run {run_id}: not re-applied, this command's own settings are used instead: callbacks.tensorboard.log_dir"
        in caplog.text
    )

    backup = tmp_path / "earlier-output" / "backup"
    record_backup(run_id, str(backup))  # the interrupted process's own record, on this machine
    keras_backup(backup)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        resumed, point = prepare_resume(cfg, [f"resume={run_id}"])
    assert point.backup_dir == resumed.callbacks.backup_and_restore.backup_dir == str(backup)
    assert resumed.callbacks.tensorboard.log_dir.startswith(str(tmp_path / "output"))
