"""The end of a fit's decisions, with synthetic facts: why it stopped, which model becomes model/, the summary."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.publisher import model_source, stop_reason, summary_metrics


@pytest.mark.parametrize(
    ("status", "stopped", "last_loss", "fit_epochs", "planned", "reason"),
    [
        ("FINISHED", False, 0.5, 10, 10, "completed"),
        ("FINISHED", True, 0.5, 10, 10, "completed"),  # stop_training set at the last epoch anyway
        ("FINISHED", True, 0.5, 4, 10, "early_stopping"),
        ("FINISHED", True, float("nan"), 4, 10, "nan_loss"),
        ("FINISHED", True, None, None, 10, "completed"),  # no epoch ended
        ("KILLED", True, 0.5, 4, 10, "interrupted"),
        ("FAILED", False, 0.5, 4, 10, "error"),
    ],
)
def test_stop_reason(status, stopped, last_loss, fit_epochs, planned, reason):
    assert stop_reason(status, stopped, last_loss, fit_epochs, planned) == reason


@pytest.mark.parametrize(
    ("status", "log_model", "best_weights", "best_epoch", "missing", "source"),
    [
        ("FINISHED", True, True, True, False, "best"),
        ("FINISHED", True, False, True, False, "logged best"),  # a continued run that never improved
        ("FINISHED", True, False, False, True, "last"),  # no monitored metric: no best epoch
        ("FINISHED", True, False, False, False, None),  # no epoch ended
        ("FINISHED", False, True, True, False, None),
        ("FAILED", True, True, True, False, None),
        ("KILLED", True, True, True, False, None),
    ],
)
def test_which_model_becomes_model_folder(status, log_model, best_weights, best_epoch, missing, source):
    assert model_source(status, log_model, best_weights, best_epoch, missing) == source


def test_the_summary_holds_the_best_epoch_and_the_other_validation_metrics_at_it():
    history = [
        {"epoch": 0, "loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.7},
        {"epoch": 1, "loss": 0.8, "val_loss": 0.6, "val_accuracy": 0.8},
        {"epoch": 2, "loss": 0.6, "val_loss": 0.7, "val_accuracy": 0.85},
    ]
    assert summary_metrics(history, 2, 1, 0.6, "val_loss") == {
        "lr_changes": 2,
        "epochs_run": 3,
        "best_epoch": 1,
        "best_val_loss": 0.6,
        "val_accuracy_at_best": 0.8,
    }
    assert summary_metrics(history, 0, None, None, "val_loss") == {"lr_changes": 0, "epochs_run": 3}


def test_csv_files_hold_six_significant_digits(tmp_path):
    from plugins.artifacts import write_history

    write_history([{"epoch": 0, "learning_rate": np.float32(1e-4), "loss": 0.123456789}], tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_text().splitlines() == ["epoch,learning_rate,loss", "0,0.0001,0.123457"]
