"""Continuing a logged run: step offsets of a second fit, a resume, skipped epochs; reading a real run back."""

from __future__ import annotations

import mlflow

from plugins.continuation import LoggedEpochs, StepOffsets


def logged(epochs: int, last_batch_step: int | None = None) -> LoggedEpochs:
    return LoggedEpochs([{"epoch": step, "loss": 1.0} for step in range(epochs)], {}, last_batch_step)


def test_a_new_run_keeps_keras_numbers():
    offsets = StepOffsets(LoggedEpochs())
    assert offsets.first_epoch(0, lambda: 0) == []
    assert [offsets.run_epoch(epoch) for epoch in range(3)] == [0, 1, 2]
    assert offsets.batch_offset == 0 and offsets.fit_epochs(2) == 3


def test_a_second_fit_restarting_at_zero_carries_on_after_the_logged_epochs_and_batch_steps():
    offsets = StepOffsets(logged(4, last_batch_step=40))
    assert offsets.first_epoch(0, lambda: 0) == []  # a recompiled optimizer counts from 0
    assert offsets.run_epoch(0) == 4 and offsets.run_epoch(2) == 6
    assert offsets.batch_offset == 40
    assert offsets.fit_epochs(6) == 3


def test_a_resume_keeps_keras_numbers_and_its_optimizer_s_own_step_count():
    offsets = StepOffsets(logged(4, last_batch_step=40))
    assert offsets.first_epoch(4, lambda: 40) == []
    assert offsets.run_epoch(4) == 4 and offsets.batch_offset == 0
    assert offsets.fit_epochs(5) == 6  # Keras counts initial_epoch's epochs as the fit's


def test_epochs_a_fit_skips_past_the_logged_ones_are_named():
    offsets = StepOffsets(logged(3))
    assert offsets.first_epoch(5, lambda: 0) == [3, 4]
    assert offsets.run_epoch(5) == 5


def test_a_run_s_epochs_params_and_batch_steps_are_read_back(tracking_uri):
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("continuation")).info.run_id
    client.log_param(run_id, "model.name", "cnn")
    for step in range(3):
        client.log_metric(run_id, "val_loss", 1.0 - step / 10, step=step)
    client.log_metric(run_id, "best_val_loss", 0.8, step=0)  # a summary metric: not an epoch
    client.log_metric(run_id, "batch_loss", 1.0, step=57)
    read = LoggedEpochs.read(client, run_id, with_batch_steps=True)
    assert read.history == [{"epoch": step, "val_loss": 1.0 - step / 10} for step in range(3)]
    assert read.params == {"model.name": "cnn"} and read.last_batch_step == 57 and read.next_epoch == 3
    assert LoggedEpochs.read(client, run_id, with_batch_steps=False).last_batch_step is None


def test_a_store_that_cannot_be_read_starts_the_fit_afresh(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'missing' / 'no.db'}")
    assert LoggedEpochs.read(client, "0123456789abcdef", with_batch_steps=True) == LoggedEpochs()
