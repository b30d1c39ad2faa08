"""Faults injected into real training processes against a real store: nothing is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import mlflow
import pandas as pd
import pytest

from tests.conftest import EPOCH_KEYS, ROOT, all_runs, free_port, small_disk, start_mlflow_server, stop_mlflow_server

pytestmark = pytest.mark.slow
# A fixed budget (no early stopping) and verbose=2, which prints "Epoch k/N" as epoch k-1 begins.
TRAIN = ["experiments.train", "callbacks=basic", "trainer.verbose=2"]


def start_training(tmp_path, *overrides, env=None):
    log = open(tmp_path / f"train-{time.monotonic_ns()}.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", *TRAIN, *overrides],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    return process, log


def wait_for_epoch(log, epoch_number: int, process, limit_s: float = 300) -> None:
    """Until the process prints "Epoch <epoch_number>/" (that epoch has begun)."""
    wait_for_line(log, f"Epoch {epoch_number}/", process, limit_s)


def wait_for_line(log, text: str, process, limit_s: float = 300) -> None:
    """Until the process prints ``text``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        log.seek(0)
        if text in log.read():
            return
        assert process.poll() is None, "training ended before the fault could be injected"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never printed")


def steps(client, run_id, key="val_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_names(client, run_id) -> set[str]:
    """The run's files two levels deep, and its model's as ``model/...`` (its logged model, or its own
    model/ folder: what ``runs:/<run>/model`` loads)."""
    # MLflow finds a run's logged model ("model") through the global tracking URI, whatever the client's.
    mlflow.set_tracking_uri(client.tracking_uri)
    names = set()
    for item in client.list_artifacts(run_id):
        names |= {sub.path for sub in client.list_artifacts(run_id, item.path)} if item.is_dir else {item.path}
    model = mlflow.artifacts.list_artifacts(f"runs:/{run_id}/model", tracking_uri=client.tracking_uri)
    return names | {item.path for item in model}


# `at`: the epoch (from 1) during which the signal lands.
@pytest.mark.parametrize(("signum", "at"), [(signal.SIGTERM, 2), (signal.SIGINT, 3), (signal.SIGHUP, 2)])
def test_a_signal_during_an_epoch_ends_the_run_killed_with_everything_logged(tmp_path, tracking_uri, signum, at):
    process, log = start_training(tmp_path, "trainer.epochs=8")
    wait_for_epoch(log, at, process)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum
    log.seek(0)
    last_line = log.read().strip().splitlines()[-1]
    assert (
        last_line.startswith(f"error: training interrupted by {signal.Signals(signum).name}: run ")
        and "resume=" in last_line
    )
    run = all_runs(tracking_uri)[0]
    client = mlflow.MlflowClient(tracking_uri)
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "interrupted"
    assert run.data.tags["failure.reason"] == f"training interrupted by {signal.Signals(signum).name}"
    finished = steps(client, run.info.run_id)
    assert (
        finished == list(range(len(finished))) and at - 1 <= len(finished) <= at
    )  # every finished epoch, no partial one
    for key in EPOCH_KEYS:
        assert steps(client, run.info.run_id, key) == finished, key
    assert {"checkpoints/best.keras", "history.csv", "learning_curves.png", "lr_changes.csv"} <= artifact_names(
        client, run.info.run_id
    )
    history = pd.read_csv(client.download_artifacts(run.info.run_id, "history.csv", str(tmp_path)))
    assert list(history["epoch"]) == finished


def test_two_ctrl_c_in_quick_succession_end_the_run_killed_with_its_files(tmp_path, tracking_uri):
    """The second signal lands while the run's files are written: they are written whole, the wait for
    the server is skipped, and the run still ends KILLED with its reason, in one line."""
    process, log = start_training(tmp_path, "trainer.epochs=8")
    wait_for_epoch(log, 2, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.03)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    log.seek(0)
    said = log.read()
    assert "Traceback" not in said, said[-3000:]
    assert said.strip().splitlines()[-1].startswith("error: training interrupted by SIGINT: run ")
    run = all_runs(tracking_uri)[0]
    client = mlflow.MlflowClient(tracking_uri)
    assert run.info.status == "KILLED" and run.data.tags["failure.reason"] == "training interrupted by SIGINT"
    assert {"checkpoints/best.keras", "history.csv", "learning_curves.png"} <= artifact_names(client, run.info.run_id)


def test_ctrl_c_while_tensorflow_loads_is_one_line_and_trains_nothing(tmp_path, tracking_uri):
    process, log = start_training(tmp_path, "trainer.epochs=8")
    wait_for_line(log, "absl::InitializeLog", process)  # TensorFlow's first words as it loads
    process.send_signal(signal.SIGINT)
    exit_code = process.wait(timeout=120)
    log.seek(0)
    said = log.read()
    assert exit_code == 130, said[-3000:]  # what it printed says where the signal landed
    assert "Traceback" not in said, said[-3000:]
    assert said.strip().splitlines()[-1] == "error: interrupted before training began; nothing was trained"
    assert all_runs(tracking_uri) == []


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, tracking_uri, run_cli):
    straight = run_cli(*TRAIN, "trainer.epochs=6", "mlflow.run_name=straight")
    assert straight.returncode == 0, straight.stdout[-2000:]
    process, log = start_training(tmp_path, "trainer.epochs=6", "mlflow.run_name=cut")
    wait_for_epoch(log, 3, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    runs = {run.info.run_name: run for run in all_runs(tracking_uri)}
    cut = runs["cut"].info.run_id

    refused = run_cli(*TRAIN, f"resume={cut}", "reg=l2")  # a resumed run keeps its config
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: resume={cut}: a resumed run keeps its params; only trainer.epochs may change, not reg.l2=0.0001"
        )
    )
    untouched = mlflow.MlflowClient(tracking_uri).get_run(cut)
    assert untouched.info.status == "KILLED" and untouched.data.metrics == runs["cut"].data.metrics

    resumed = run_cli(*TRAIN, f"resume={cut}", "trainer.verbose=0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri)
    assert len(all_runs(tracking_uri)) == 2  # continued in place, no new run
    run = client.get_run(cut)
    assert run.info.status == "FINISHED" and run.data.tags["resumes"] == "1" and "failure.reason" not in run.data.tags
    for key in EPOCH_KEYS:
        assert steps(client, cut, key) == list(range(6)), key  # no gap, no repeat
    straight_id = runs["straight"].info.run_id
    for key in ("loss", "val_loss", "val_accuracy", "learning_rate"):
        before = [m.value for m in sorted(client.get_metric_history(straight_id, key), key=lambda m: m.step)]
        after = [m.value for m in sorted(client.get_metric_history(cut, key), key=lambda m: m.step)]
        assert after == before, key  # deterministic on CPU: interrupted + resumed == uninterrupted
    assert run.data.metrics["test_accuracy"] == client.get_run(straight_id).data.metrics["test_accuracy"]
    assert run.data.params == {k: v for k, v in client.get_run(cut).data.params.items()}


def test_kill_9_then_resume(tmp_path, tracking_uri, run_cli):
    # Each epoch's metrics sent at its end: at most the one on its way is lost, not a second's worth.
    process, log = start_training(tmp_path, "trainer.epochs=6", "mlflow.metrics_interval_s=0")
    wait_for_epoch(log, 4, process)
    process.kill()  # SIGKILL: no handler runs, the run is left RUNNING
    process.wait(timeout=60)
    run = all_runs(tracking_uri)[0]
    assert run.info.status == "RUNNING"
    logged = steps(mlflow.MlflowClient(tracking_uri), run.info.run_id)
    resumed = run_cli(*TRAIN, f"resume={run.info.run_id}", "trainer.verbose=0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri)
    resumed_run = client.get_run(run.info.run_id)
    assert resumed_run.info.status == "FINISHED" and len(logged) >= 2
    # An epoch whose metrics were still on their way when the process died is lost; the backup
    # was taken after it, so training goes on past it and the run names it.
    missing = [int(epoch) for epoch in resumed_run.data.tags.get("missing_epochs", "").split(",") if epoch]
    assert missing == list(range(len(logged), len(logged) + len(missing))) and len(missing) <= 1
    assert steps(client, run.info.run_id) == [epoch for epoch in range(6) if epoch not in missing]


def test_a_logged_checkpoint_that_safe_mode_refuses_leaves_the_run_as_it_was(tmp_path, tracking_uri, run_cli):
    """A resume without a local backup starts from the run's checkpoints/best.keras. One that holds
    code (a Lambda layer, which Keras' safe mode refuses) is refused in one line, and the KILLED run
    stays KILLED with its own reason."""
    done = run_cli(*TRAIN, "trainer.epochs=1", "~callbacks.backup_and_restore", "trainer.verbose=0")
    assert done.returncode == 0, done.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri)
    run_id = all_runs(tracking_uri)[0].info.run_id
    client.set_tag(run_id, "failure.reason", "training interrupted by SIGTERM")
    client.set_terminated(run_id, "KILLED")
    import keras

    tampered = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    tampered.save(tmp_path / "best.keras")
    client.log_artifact(run_id, str(tmp_path / "best.keras"), "checkpoints")  # replaces the logged one
    resumed = run_cli(*TRAIN, f"resume={run_id}", "trainer.epochs=2", "~callbacks.backup_and_restore")
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    last = resumed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: resume={run_id}: its checkpoints/best.keras cannot be used (") and "Lambda" in last
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["failure.reason"] == "training interrupted by SIGTERM"
    assert steps(client, run_id) == [0]


def test_resume_without_a_backup_goes_on_at_the_last_logged_rate(tmp_path, tracking_uri, run_cli):
    # No BackupAndRestore, and a plateau that halves the rate after every epoch but the first: the
    # continuation starts from the best checkpoint, at the rate the run had reached, not the initial one.
    plateau = [
        "callbacks=[basic,reduce_lr_on_plateau]",
        "~callbacks.backup_and_restore",
        "callbacks.reduce_lr_on_plateau.patience=0",
        "callbacks.reduce_lr_on_plateau.min_delta=10",
    ]
    process, log = start_training(tmp_path, "trainer.epochs=6", *plateau)
    wait_for_epoch(log, 4, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    client = mlflow.MlflowClient(tracking_uri)
    run_id = all_runs(tracking_uri)[0].info.run_id
    before = [m.value for m in sorted(client.get_metric_history(run_id, "learning_rate"), key=lambda m: m.step)]
    assert len(before) >= 3 and before[:3] == pytest.approx([1e-3, 1e-3, 5e-4], rel=1e-6)
    clash = run_cli(*TRAIN, f"resume={run_id}")  # callbacks=basic again: the logged plateau settings lose their group
    assert clash.returncode == 2 and "Traceback" not in clash.stderr
    assert clash.stderr.strip().splitlines()[-1].startswith(f"error: resume={run_id}: the run's overrides (")
    assert "do not compose: Could not override 'callbacks.reduce_lr_on_plateau.patience'" in clash.stderr
    resumed = run_cli("experiments.train", f"resume={run_id}", "trainer.verbose=0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "no local backup of run" in resumed.stdout  # Hydra logs to stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert steps(client, run_id, "learning_rate") == list(range(6))
    after = [m.value for m in sorted(client.get_metric_history(run_id, "learning_rate"), key=lambda m: m.step)]
    assert after[len(before)] == before[-1]  # not the initial 1e-3 of a fresh optimizer
    assert "model/MLmodel" in artifact_names(client, run_id)


def test_resume_without_a_backup_goes_on_with_a_schedule_where_it_was(tracking_uri):
    import keras
    import numpy as np

    from experiments.resume import ResumePoint
    from experiments.schedules import cosine_decay
    from experiments.training import restore_for_resume, start_from_logged_checkpoint
    from plugins import MLflowCallback

    def model():
        keras.utils.set_random_seed(0)
        built = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        built.compile(
            keras.optimizers.Adam(cosine_decay(1e-2, epochs=10, alpha=0.0, steps_per_epoch=5)),
            "sparse_categorical_crossentropy",
        )
        return built

    x, y = np.random.default_rng(0).random((50, 64)).astype("float32"), np.arange(50) % 10
    trained = model()
    with mlflow.start_run() as run:  # logs checkpoints/best.keras
        trained.fit(
            x,
            y,
            validation_data=(x, y),
            batch_size=10,
            epochs=2,
            verbose=0,
            callbacks=[MLflowCallback(log_model=False)],
        )
    fresh = model()
    resume = ResumePoint(run.info.run_id, next_epoch=4, backup_dir=None, learning_rate=1e-2)
    start_from_logged_checkpoint(fresh, resume)
    restore_for_resume(fresh, resume, steps_per_epoch=5)
    assert int(fresh.optimizer.iterations) == 20
    schedule = cosine_decay(1e-2, epochs=10, alpha=0.0, steps_per_epoch=5)
    assert float(fresh.optimizer.learning_rate) == pytest.approx(float(schedule(20)))  # the schedule's, not 1e-2
    for restored, best in zip(fresh.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_allclose(restored, best)  # the last epoch was the best: val_loss falls on its own data


def test_nan_loss_ends_the_run_failed_with_the_reason(tracking_uri, run_cli):
    done = run_cli(*TRAIN, "trainer.epochs=3", "optimizer=sgd", "optimizer.learning_rate=1e12")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("FAILED: the loss became NaN; try a lower optimizer.learning_rate")
    )
    run = all_runs(tracking_uri)[0]
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["failure.reason"]
    assert run.data.tags["stop_reason"] == "nan_loss"


def test_error_inside_fit_ends_the_run_failed_with_the_best_checkpoint(tracking_uri, run_cli):
    done = run_cli(*TRAIN, "trainer.epochs=6", "+callbacks.fault={_target_: tests.faults.RaiseAtEpoch, epoch: 3}")
    assert done.returncode != 0 and "injected fault at epoch 3" in done.stderr
    run = all_runs(tracking_uri)[0]
    client = mlflow.MlflowClient(tracking_uri)
    assert run.info.status == "FAILED" and run.data.tags["stop_reason"] == "error"
    assert run.data.tags["failure.reason"] == "RuntimeError: injected fault at epoch 3"
    assert steps(client, run.info.run_id) == [0, 1, 2]
    assert "checkpoints/best.keras" in artifact_names(client, run.info.run_id)


def test_tracking_server_stopped_and_restarted_during_training(tmp_path, run_cli):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    # MLflow's own HTTP retries off: only the callback's retries (each epoch, and at the end for
    # mlflow.flush_timeout_s) can bring the points of the outage in.
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    process, log = start_training(tmp_path, "trainer.epochs=12", "trainer.batch_size=8", env=env)
    try:
        wait_for_epoch(log, 3, process)
        stop_mlflow_server(server)
        wait_for_epoch(log, 7, process)
        server = start_mlflow_server(tmp_path, port)
        assert process.wait(timeout=600) == 0
        client = mlflow.MlflowClient(uri)
        run = all_runs(uri)[0]
        assert run.info.status == "FINISHED"
        for key in EPOCH_KEYS:  # every point of every epoch, sent late or not
            assert steps(client, run.info.run_id, key) == list(range(12)), key
        assert {"model/data", "history.csv", "model/MLmodel"} <= artifact_names(client, run.info.run_id)
    finally:
        if process.poll() is None:
            process.kill()
        stop_mlflow_server(server)


def test_unreachable_server_at_start_fails_before_training(tmp_path, run_cli):
    done = run_cli(*TRAIN, "mlflow.wait_for_server_s=1", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("error: the tracking server http://127.0.0.1:9 does not answer")
    )
    assert "Epoch 1/" not in done.stdout


def test_four_parallel_writers_to_one_sqlite_store(tracking_uri, run_cli):
    done = run_cli(
        "experiments.train",
        "-m",
        "reg=none,l2,dropout,batchnorm",
        "trainer.epochs=3",
        "trainer.verbose=0",
        "callbacks=basic",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "trainer.threads=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri)
    children = [run for run in all_runs(tracking_uri) if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    points = sum(len(client.get_metric_history(run.info.run_id, key)) for run in children for key in EPOCH_KEYS)
    assert points == 4 * 3 * len(EPOCH_KEYS)


class HangUp:
    """Listens on a port and hangs up on every connection: a server that never answers. Counts them."""

    def __init__(self, port: int):
        self.connections = 0
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(64)
        threading.Thread(target=self._hang_up, daemon=True).start()

    def _hang_up(self):
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()

    def close(self):
        with contextlib.suppress(OSError):  # closed already
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() alone leaves listening
        self._socket.close()


def test_what_the_server_never_took_is_kept_on_disk_and_synced_later(tmp_path, monkeypatch):
    """The server gone for the whole of training: the callback tries it once per retry (each epoch),
    not once per waiting call, and the run's last calls once each; every call is kept on disk, and
    experiments.sync sends them later."""
    import keras
    from sklearn.datasets import load_digits

    from experiments.sync import main as sync
    from plugins import MLflowCallback
    from plugins.spool import SPOOL_FILE

    # MLflow's own retries on, without waits: each attempt that gets no answer is 3 connections.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    mlflow.set_tracking_uri(uri)
    run = mlflow.start_run()
    stop_mlflow_server(server)  # gone for the whole of training and beyond flush_timeout_s
    gone = HangUp(port)
    try:
        x, y = load_digits(return_X_y=True)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        # The three epochs' metrics and the checkpoint wait for the end, whatever the machine's speed: one
        # call with the summary's metrics, one write of the model (the HTTP retries can pass 10 s).
        tracker = MLflowCallback(
            flush_timeout_s=0, metrics_interval_s=3600, checkpoint_interval_s=3600, output_dir=tmp_path / "out"
        )
        model.fit(x / 16, y, validation_split=0.2, epochs=3, verbose=0, callbacks=[tracker])
        # reading the run's earlier epochs, the first call, then one per epoch's retry at most
        assert 2 * 3 <= gone.connections <= (2 + 3) * 3
        during_training = gone.connections
        tracker.finish_run("FINISHED", metrics={"test_accuracy": 0.5})  # as the runner ends its run
        assert gone.connections - during_training == 2  # one try each: no minutes of retries
        assert mlflow.active_run() is None
        gone.close()
        assert tracker.unsent_folder == tmp_path / "out" / "unsent" / run.info.run_id
        kept = (tracker.unsent_folder / SPOOL_FILE).read_text().splitlines()
        # params, model summary, the epochs' and summary metrics, 3 end-of-training files, model/
        # (its Keras file is the checkpoint: none beside it), then the last metrics and the run's end
        assert len(kept) == 9

        server = start_mlflow_server(tmp_path, port)
        assert sync([str(tracker.unsent_folder), "--tracking-uri", uri]) == 0
        client = mlflow.MlflowClient(uri)
        for key in EPOCH_KEYS:
            assert steps(client, run.info.run_id, key) == [0, 1, 2], key
        synced = client.get_run(run.info.run_id)
        assert synced.info.status == "FINISHED" and synced.data.metrics["test_accuracy"] == 0.5
        assert synced.data.params["model.total_params"] == str(64 * 10 + 10)
        assert {"model/data", "history.csv", "model/MLmodel"} <= artifact_names(client, run.info.run_id)
        assert not (tracker.unsent_folder / SPOOL_FILE).exists()
    finally:
        gone.close()
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # a failure above left no server
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        stop_mlflow_server(server)


def test_an_upload_whose_file_was_never_written_is_named_and_the_rest_is_kept(tmp_path, tracking_uri, caplog):
    """A full disk at the end of training: the checkpoint was never written, so its upload cannot be
    kept for later; the calls beside it still are, and sync sends them."""
    from functools import partial

    from mlflow.entities import Metric

    from plugins import spool

    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("full-disk")).info.run_id
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,0.5\n")
    calls = [
        ("best.keras", partial(client.log_artifact, run_id, str(tmp_path / "never" / "best.keras"), "checkpoints")),
        ("metrics of epoch 0", partial(client.log_batch, run_id, metrics=[Metric("loss", 0.5, 0, 0)])),
        ("history.csv", partial(client.log_artifact, run_id, str(history))),
    ]
    folder = spool.keep(calls, tmp_path / "unsent" / run_id)
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"cannot keep 'best.keras' for later: its file {tmp_path / 'never' / 'best.keras'} is not there"
    ]
    assert spool.send(folder, client) == (2, 0, 0)
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    assert [a.path for a in client.list_artifacts(run_id)] == ["history.csv"]


def test_a_run_the_callback_started_is_ended_by_sync_when_the_server_is_gone(tmp_path, monkeypatch):
    """Standalone use, the server down from the first epoch on: fit returns normally, and the run's
    end (FINISHED) is kept with everything else until experiments.sync sends it."""
    import keras
    from sklearn.datasets import load_digits

    from experiments.sync import main as sync
    from plugins import MLflowCallback

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    mlflow.set_tracking_uri(uri)
    stop_server = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch == 0 and stop_mlflow_server(server)
    )
    try:
        x, y = load_digits(return_X_y=True)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        tracker = MLflowCallback(flush_timeout_s=0, output_dir=tmp_path / "out")
        model.fit(x / 16, y, validation_split=0.2, epochs=3, verbose=0, callbacks=[stop_server, tracker])
        assert mlflow.active_run() is None
        server = start_mlflow_server(tmp_path, port)
        # Back to MLflow's own retries, as a user's sync has them: with none, a request that meets
        # the server closing an idle keep-alive connection fails (seen once in a full run of the suite).
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        client = mlflow.MlflowClient(uri)
        assert client.get_run(tracker.run_id).info.status == "RUNNING"
        assert sync([str(tracker.unsent_folder), "--tracking-uri", uri]) == 0
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
        for key in EPOCH_KEYS:
            assert steps(client, tracker.run_id, key) == [0, 1, 2], key
    finally:
        mlflow.set_tracking_uri(None)
        stop_mlflow_server(server)


def test_server_gone_when_training_ends_then_synced(tmp_path, run_cli):
    """The runner's own last calls (test metrics, the run's end) are kept with the callback's, and
    the command ends cleanly: the run becomes FINISHED with everything once synced."""
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    try:
        done = run_cli(
            *TRAIN,
            "trainer.epochs=2",
            "mlflow.flush_timeout_s=0",
            f"+callbacks.fault={{_target_: tests.faults.StopServerWhenTrainingEnds, server_pid: {server.pid}}}",
            env=env,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        said = done.stdout + done.stderr  # Hydra logs to stdout
        assert "python -m plugins.sync" in said and "ending the run FINISHED" in said
        server = start_mlflow_server(tmp_path, port)
        client = mlflow.MlflowClient(uri)
        run = all_runs(uri)[0]
        assert run.info.status == "RUNNING" and "test_accuracy" not in run.data.metrics  # not sent yet
        synced = run_cli("experiments.sync", "--tracking-uri", uri)  # finds outputs/**/unsent/<run id>
        assert synced.returncode == 0, synced.stderr[-2000:]
        run = client.get_run(run.info.run_id)
        assert run.info.status == "FINISHED"
        assert 0 <= run.data.metrics["test_accuracy"] <= 1 and run.data.metrics["best_epoch"] in (0, 1)
        for key in EPOCH_KEYS:
            assert steps(client, run.info.run_id, key) == [0, 1], key
        assert {"model/data", "history.csv", "model/MLmodel"} <= artifact_names(client, run.info.run_id)
    finally:
        stop_mlflow_server(server)


def test_ctrl_c_while_the_end_waits_for_the_server_keeps_everything_and_stops_at_once(tmp_path, run_cli):
    """With the server gone as training ends, the end retries for up to mlflow.flush_timeout_s. One
    Ctrl-C stops that wait: what the server did not take is kept on disk, the command ends KILLED
    (exit 130) in one line, and the run is whole once synced; a resume then adds the test metrics."""
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    stop_server = f"+callbacks.fault={{_target_: tests.faults.StopServerWhenTrainingEnds, server_pid: {server.pid}}}"
    process, log = start_training(tmp_path, "trainer.epochs=2", "mlflow.flush_timeout_s=600", stop_server, env=env)
    try:
        wait_for_line(log, "Ctrl-C stops waiting", process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130  # not the 600 s of flush_timeout_s
        log.seek(0)
        said = log.read()
        assert "Traceback" not in said and "python -m plugins.sync" in said, said[-3000:]
        assert said.strip().splitlines()[-1].startswith("error: training interrupted by SIGINT: run ")
        server = start_mlflow_server(tmp_path, port)
        synced = run_cli("plugins.sync", "--tracking-uri", uri)
        assert synced.returncode == 0, synced.stderr[-2000:]
        client = mlflow.MlflowClient(uri)
        run = all_runs(uri)[0]
        assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "completed"
        for key in EPOCH_KEYS:
            assert steps(client, run.info.run_id, key) == [0, 1], key
        assert {"model/data", "history.csv", "learning_curves.png", "model/MLmodel"} <= artifact_names(
            client, run.info.run_id
        )
        # The fault was an object built from an override: a resume never builds one from the store's
        # copy of the overrides, so this command sets the key to nothing in its place.
        resumed = run_cli(*TRAIN, f"resume={run.info.run_id}", "+callbacks.fault=null", env=env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        run = client.get_run(run.info.run_id)
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test_accuracy"] <= 1
    finally:
        if process.poll() is None:
            process.kill()
        stop_mlflow_server(server)


def test_a_signal_stops_the_whole_sweep(tmp_path, tracking_uri):
    process, log = start_training(tmp_path, "hydra.mode=MULTIRUN", "reg=none,l2,dropout", "trainer.epochs=6")
    wait_for_epoch(log, 3, process)  # inside the first job
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    runs = all_runs(tracking_uri)
    parent = [run for run in runs if run.data.tags.get("sweep") == "true"][0]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [child.info.status for child in children] == ["KILLED"]  # no job started after the signal
    assert parent.info.status == "KILLED" and parent.data.tags["failure.reason"] == "the sweep was stopped by SIGTERM"
    assert (parent.data.metrics["jobs"], parent.data.metrics["jobs_finished"]) == (1, 0)


def test_a_signal_to_a_joblib_sweep_stops_its_workers_and_their_runs(tmp_path, tracking_uri):
    """The driver passes the signal on to joblib's worker processes: each job ends after its current
    batch, its run KILLED; the job waiting for a worker never begins; no process is left training."""
    import psutil

    process, log = start_training(
        tmp_path,
        "hydra.mode=MULTIRUN",
        "reg=none,l2,dropout",
        "trainer.epochs=10",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.threads=1",
    )
    wait_for_epoch(log, 2, process)
    workers = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=180) == 143
    log.seek(0)
    assert "Traceback" not in log.read()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []  # no worker trains on after the sweep
    runs = all_runs(tracking_uri)
    parent = [run for run in runs if run.data.tags.get("sweep") == "true"][0]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(child.data.tags["reg"] for child in children) == ["l2", "none"]  # dropout never began
    assert [child.info.status for child in children] == ["KILLED", "KILLED"]
    assert all(child.data.tags["failure.reason"] == "training interrupted by SIGTERM" for child in children)
    assert parent.info.status == "KILLED" and parent.data.metrics["jobs_finished"] == 0


def test_a_full_artifact_store_leaves_no_half_file_and_the_run_fails_until_sync(tmp_path, tracking_uri, run_cli):
    """The store's database answers, its artifact disk is full: no file lands half-written, the run
    is FAILED with what is missing named, the command exits 1, and experiments.sync finishes it."""
    client = mlflow.MlflowClient(tracking_uri)
    artifacts = tmp_path / "artifacts"
    with small_disk(artifacts, "300k"):
        client.create_experiment("keras-experiments", artifact_location=artifacts.as_uri())
        done = run_cli(*TRAIN, "trainer.epochs=2", "mlflow.flush_timeout_s=0")
        assert done.returncode == 1 and "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert " not stored; send them and finish the run with: python -m experiments.sync " in last
        (run,) = all_runs(tracking_uri)
        assert run.info.status == "FAILED" and "model/" in run.data.tags["missing_files"]
        stored = {
            path.relative_to(artifacts / run.info.run_id / "artifacts"): path.stat().st_size
            for path in artifacts.rglob("*")
            if path.is_file()
        }
        (tracked,) = (tmp_path / "outputs").glob("*/*/mlflow")  # the callback's local copies of the run's files
        copies = {name: (tracked / name).stat().st_size for name in stored if (tracked / name).is_file()}
        assert copies and all(stored[name] == size for name, size in copies.items())  # what landed, landed whole
        assert not any(name.parts[0] == "model" for name in stored)  # model/ is whole or absent: absent here
        subprocess.run(["umount", "-l", str(artifacts)], check=True)  # the disk gets room again
        folder = last.rsplit(" ", 1)[-1]
        synced = run_cli("experiments.sync", folder, "--tracking-uri", tracking_uri)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        run = client.get_run(run.info.run_id)
        assert run.info.status == "FINISHED"
        assert "missing_files" not in run.data.tags and "failure.reason" not in run.data.tags
        assert {"model/MLmodel", "model/data"} <= artifact_names(client, run.info.run_id)


@pytest.mark.parametrize(
    ("size", "failed_write"), [("600k", "No space left on device"), ("1200k", "Can't synchronously")]
)
def test_a_full_output_folder_keeps_the_epochs_and_ends_in_one_line(
    tmp_path, tracking_uri, run_cli, size, failed_write
):
    """The run's local output folder fills up during the first epoch's checkpoint (600k), or during a
    later epoch's backup, an HDF5 file whose close fails too (1200k; it crashed the process as it
    exited): the epochs' metrics are still logged, the run ends FAILED with the reason, and the
    command says so in one line and exits 1."""
    with small_disk(tmp_path / "small", size) as small:
        done = run_cli(*TRAIN, "trainer.epochs=3", "mlflow.flush_timeout_s=0", f"hydra.run.dir={small}/run")
    assert done.returncode == 1, done.stderr[-3000:]
    assert (
        "Traceback" not in done.stderr and "Logging error" not in done.stderr and "Exception ignored" not in done.stderr
    )
    last = done.stderr.strip().splitlines()[-1]
    assert f" FAILED: OSError: [Errno 28] {failed_write}" in last and "; make room (the output folder is " in last
    (run,) = all_runs(tracking_uri)
    assert run.info.status == "FAILED" and run.data.tags["failure.reason"].startswith("OSError: [Errno 28]")
    logged = steps(mlflow.MlflowClient(tracking_uri), run.info.run_id)
    assert logged == list(range(len(logged))) and logged
