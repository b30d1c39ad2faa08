"""What a run is called and which params it gets: what a person reads in the MLflow UI."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir

from experiments.run_identity import composed_defaults, run_name, training_params
from tests.conftest import CONF


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
    assert "reg.batchnorm_momentum" not in params
    assert training_params(compose_cfg("reg=batchnorm"))["reg.batchnorm_momentum"] == 0.9


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "cnn-none"),
        (["reg=l2"], "cnn-l2"),
        (["reg=l2", "schedule=step"], "cnn-l2 schedule=step"),
        (["+experiment=regularisation_study", "reg=l2", "trainer.seed=2"], "cnn-l2 trainer.seed=2"),
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


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["trainer.epochs=20", "optimizer.learning_rate=0.001"], "cnn-none"),  # both as conf/ has them
        (["trainer.epochs=20", "trainer.batch_size=64"], "cnn-none trainer.batch_size=64"),
        (["schedule=step", "schedule.callback.schedule.boundaries=[10,15]"], "cnn-none schedule=step"),
        (
            ["schedule=step", "schedule.callback.schedule.boundaries=[8,14]"],
            "cnn-none schedule=step schedule.boundaries=[8,14]",
        ),
        (["trainer.class_weight=null", "+data.note=x"], "cnn-none data.note=x"),
    ],
)
def test_a_value_typed_as_its_default_is_not_in_the_name(compose_cfg, overrides, name):
    groups = [override for override in overrides if "." not in override.split("=")[0]]
    assert run_name(compose_cfg(*overrides), overrides, defaults=compose_cfg(*groups)) == name


def test_the_defaults_a_name_is_compared_with_come_from_the_group_choices_alone(compose_cfg):
    overrides = ["model=mlp", "trainer.epochs=3", "+experiment=regularisation_study"]
    study_epochs = compose_cfg("model=mlp", "+experiment=regularisation_study").trainer.epochs
    cfg = compose_cfg(*overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        defaults = composed_defaults(cfg, overrides)
    assert cfg.trainer.epochs == 3
    assert defaults.model.name == "mlp" and defaults.trainer.epochs == study_epochs != 3
    assert composed_defaults(cfg, ["model=mlp"]) is None  # no value to compare: nothing composed


def test_the_backend_is_in_the_name_only_when_it_is_not_tensorflow(compose_cfg):
    overrides = ["reg=l2", "trainer.seed=3"]
    cfg = compose_cfg(*overrides)
    assert run_name(cfg, overrides, backend="tensorflow") == "cnn-l2 trainer.seed=3"
    assert run_name(cfg, overrides, backend="jax") == "cnn-l2 (jax) trainer.seed=3"
