"""What a run is called and which params it gets: what a person reads in the MLflow UI."""

from __future__ import annotations

import pytest

from experiments.run_identity import run_name, training_params


def test_a_default_run_s_params_are_what_defines_its_training(compose_cfg):
    params = training_params(compose_cfg())
    assert all(value is not None for value in params.values())
    assert not [key for key in params if "_target_" in key or key.rsplit(".", 1)[-1].startswith("_")]
    assert not [key for key in params if key.rsplit(".", 1)[-1] in ("filepath", "filename", "log_dir", "backup_dir")]
    assert not [key for key in params if key.startswith("mlflow.") and key not in ("mlflow.monitor", "mlflow.mode")]
    assert not [key for key in params if key.startswith(("callbacks.model_checkpoint", "callbacks.tensorboard"))]
    assert params["reg.name"] == "none" and params["model.name"] == "cnn" and params["optimizer.name"] == "adam"
    assert params["callbacks.terminate_on_nan"] is True and params["callbacks.early_stopping.patience"] == 5
    assert "reg.rotation" not in params and "resume" not in params and "trainer.verbose" not in params


def test_augmentation_settings_are_params_only_with_augmentation_on(compose_cfg):
    params = training_params(compose_cfg("reg=[l2,augment]"))
    assert params["reg.name"] == "l2+augment" and params["reg.rotation"] == 0.05


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "cnn-none"),
        (["reg=l2"], "cnn-l2"),
        (["reg=l2", "schedule=step"], "cnn-l2 schedule=step"),
        (
            ["model=mlp", "optimizer.learning_rate=0.01", "trainer.verbose=0", "mlflow.experiment_name=x"],
            "mlp-none optimizer.learning_rate=0.01",
        ),
        (["+data.note=" + "x" * 60], "cnn-none data.note=" + "x" * 21 + "…"),  # 32 characters an override
        (
            ["schedule=step", "schedule.callback.schedule.boundaries=[8,14]"],
            "cnn-none schedule=step schedule.boundaries=[8,14]",
        ),
    ],
)
def test_runs_are_named_after_model_regulariser_and_what_else_was_changed(compose_cfg, overrides, name):
    assert run_name(compose_cfg(*overrides), overrides) == name
