"""BestEpoch with synthetic logs: direction, missing monitors, NaN, and a run's earlier epochs."""

from __future__ import annotations

import logging

import pytest

from plugins.best_epoch import BestEpoch


def best(monitor="val_loss", mode="auto", higher=False) -> BestEpoch:
    return BestEpoch(monitor, mode, lambda: higher)


def test_the_lowest_loss_is_the_best_and_ties_do_not_move_it():
    epochs = best()
    improved = [epochs.update(epoch, {"val_loss": value}) for epoch, value in enumerate([0.9, 0.5, 0.5, 0.7, 0.4])]
    assert improved == [True, True, False, False, True]
    assert (epochs.epoch, epochs.value) == (4, 0.4)


@pytest.mark.parametrize(("mode", "higher", "best_epoch"), [("auto", True, 1), ("max", False, 1), ("min", True, 0)])
def test_the_direction_comes_from_the_mode_or_for_auto_from_the_metric(mode, higher, best_epoch):
    epochs = best("val_accuracy", mode, higher)
    for epoch, value in enumerate([0.8, 0.9, 0.85]):
        epochs.update(epoch, {"val_accuracy": value})
    assert epochs.epoch == best_epoch


def test_nan_is_never_the_best():
    epochs = best()
    epochs.update(0, {"val_loss": float("nan")})
    epochs.update(1, {"val_loss": 0.8})
    epochs.update(2, {"val_loss": float("inf")})
    assert (epochs.epoch, epochs.value) == (1, 0.8)


def test_a_misnamed_monitor_warns_once_with_the_keys_that_exist(caplog):
    epochs = best("val_los")
    with caplog.at_level(logging.WARNING):
        for epoch in range(3):
            assert not epochs.update(epoch, {"loss": 1.0, "val_loss": 1.0})
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["MLflowCallback monitors 'val_los', which is not in the logs: loss, val_loss"]
    assert epochs.epoch is None and epochs.warned_missing


def test_an_epoch_without_validation_is_skipped_without_a_warning(caplog):
    epochs = best()
    with caplog.at_level(logging.WARNING):
        epochs.update(0, {"loss": 1.0})  # validation_freq=2: epoch 0 has no val_ keys
        epochs.update(1, {"loss": 0.9, "val_loss": 0.7})
    assert caplog.records == [] and epochs.epoch == 1


def test_a_run_s_logged_epochs_count_and_the_fit_must_beat_them():
    epochs = best()
    epochs.add_logged([{"epoch": 0, "val_loss": 0.6}, {"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "loss": 0.4}])
    assert not epochs.update(3, {"val_loss": 0.55})
    assert (epochs.epoch, epochs.value) == (1, 0.5)
    assert epochs.update(4, {"val_loss": 0.45}) and epochs.epoch == 4


def test_logged_epochs_are_ranked_at_the_end_when_no_epoch_of_the_fit_ended():
    epochs = best("val_accuracy", higher=True)
    epochs.add_logged([{"epoch": 0, "val_accuracy": 0.7}, {"epoch": 1, "val_accuracy": 0.9}])
    epochs.rank_logged()
    assert (epochs.epoch, epochs.value) == (1, 0.9)
