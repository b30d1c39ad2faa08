"""What an outage kept on disk, replayed by experiments.sync: data, never code."""

from __future__ import annotations

import contextlib
import json
from functools import partial

import mlflow
from mlflow.entities import Metric

from experiments.sync import main as sync
from plugins import spool
from tests.conftest import small_disk


def test_sync_makes_only_the_calls_it_keeps_for_its_own_run_and_a_torn_line_stops_nothing(
    tmp_path, tracking_uri, caplog
):
    """unsent.jsonl is data from disk: a crafted line cannot call another MlflowClient method, touch
    another run or upload a file from elsewhere, and a line cut short by a crash does not stop the rest."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("sync")
    run_id, other = (client.create_run(experiment).info.run_id for _ in range(2))
    folder = tmp_path / "unsent" / run_id
    spool.keep([("metrics of epoch 0", partial(client.log_batch, run_id, metrics=[Metric("loss", 0.5, 0, 0)]))], folder)
    crafted = [
        {"what": "x", "method": "delete_experiment", "args": [experiment], "keywords": {}},
        {"what": "x", "method": "set_terminated", "args": [other, "FINISHED"], "keywords": {}},
        {"what": "x", "method": "log_artifact", "args": [run_id, "/etc/hostname", None], "keywords": {}},
        {
            "what": "x",
            "method": "log_artifacts",
            "args": [run_id, str(folder / "files" / ".." / ".."), "model"],
            "keywords": {},
        },
        {"what": "x", "method": "log_batch", "args": [run_id], "keywords": {"metrics": [{"key": 1}], "callback": 1}},
        # links inside the kept files: one to a file of the machine's, one in a kept folder
        {"what": "x", "method": "log_artifact", "args": [run_id, str(folder / "files" / "hostname"), None]},
        {"what": "x", "method": "log_artifacts", "args": [run_id, str(folder / "files" / "tensorboard"), "tb"]},
    ]
    (folder / "files" / "tensorboard").mkdir(parents=True)
    (folder / "files" / "tensorboard" / "key").symlink_to(tmp_path / "id_rsa")
    (folder / "files" / "hostname").symlink_to("/etc/hostname")
    (tmp_path / "id_rsa").write_text("PRIVATE")
    with open(folder / spool.SPOOL_FILE, "a") as records:
        records.write("".join(json.dumps(record) + "\n" for record in crafted))
    spool.keep([("ending the run FINISHED", partial(client.set_terminated, run_id, "FINISHED"))], folder)
    with open(folder / spool.SPOOL_FILE, "a") as records:
        records.write('{"what": "metrics of epoch 1", "method": "log_ba')  # the crash came mid-write
    assert sync([str(folder), "--tracking-uri", tracking_uri]) == 1  # something was refused: the user should look
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.5}  # the valid records, in order
    assert client.get_experiment(experiment).lifecycle_stage == "active"
    assert client.get_run(other).info.status == "RUNNING" and client.list_artifacts(run_id) == []
    refusals = [record.getMessage() for record in caplog.records if "refused, not sent" in record.getMessage()]
    assert len(refusals) == 8
    assert "'delete_experiment' is not a call this project keeps" in refusals[0]
    assert f"not this folder's run {run_id}" in refusals[1] and "not a JSON record" in refusals[7]
    assert "which is not a file kept in" in refusals[5] and "which holds a link (key) out of" in refusals[6]
    assert len((folder / spool.REFUSED_FILE).read_text().splitlines()) == 8
    assert not (folder / spool.SPOOL_FILE).exists()


def test_sync_on_a_full_disk_sends_nothing_twice_and_says_so_in_a_line(tmp_path, tracking_uri, capsys):
    """The spool's own disk is full: refused.jsonl cannot be written, yet the lines already sent leave
    the spool (rewritten in place, which needs no room), so a second sync sends none of them again."""
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("sync")).info.run_id
    with small_disk(tmp_path / "disk", "64k") as disk:
        folder = disk / "unsent" / run_id
        spool.keep([("epoch 0", partial(client.log_batch, run_id, metrics=[Metric("loss", 0.5, 0, 0)]))], folder)
        with open(folder / spool.SPOOL_FILE, "a") as records:
            records.write('{"what": "x", "method": "delete_experiment", "args": ["0"]}\n')
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as filler:
            while True:  # until the disk is full
                filler.write(b"\0" * 4096)
        for _ in range(2):
            assert sync([str(folder), "--tracking-uri", tracking_uri]) == 1  # the refused line is still there
        refused = folder / spool.REFUSED_FILE
        assert not refused.exists() or refused.read_text() == ""  # no room for it
        kept = (folder / spool.SPOOL_FILE).read_text().splitlines()
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.5]  # sent once, not twice
    assert kept == ['{"what": "x", "method": "delete_experiment", "args": ["0"]}']
    said = capsys.readouterr()
    assert "Traceback" not in said.out + said.err and "sent 1, 0 still unsent, 1 refused" in said.out


def test_sync_without_folders_finds_the_callback_s_own_folder_and_the_runner_s(tmp_path, monkeypatch):
    from plugins.sync import SEARCHED, unsent_folders

    kept = [
        tmp_path / "mlflow-unsent" / "unsent" / "run1",  # a plain script's callback, no output_dir
        tmp_path / "outputs" / "2026-12-06" / "10-00-00" / "mlflow" / "unsent" / "run2",
        tmp_path / "multirun" / "2026-12-06" / "10-00-00" / "0" / "mlflow" / "unsent" / "run3",
    ]
    for folder in [*kept, tmp_path / "outputs" / "empty" / "unsent" / "run4"]:
        folder.mkdir(parents=True)
    for folder in kept:
        (folder / spool.SPOOL_FILE).write_text("")
    monkeypatch.chdir(tmp_path)
    assert sorted(path.resolve() for path in unsent_folders(SEARCHED)) == sorted(kept)
