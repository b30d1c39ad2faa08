"""Every config option composes, and every model x reg builds exactly the layers asked for."""

from __future__ import annotations

import itertools

import keras
import pytest
from hydra.utils import instantiate

from experiments.checks import ConfigError, check_config
from experiments.run_identity import regularisation_label
from experiments.training import build_callbacks, build_model
from tests.conftest import CONF

GROUPS = ["data", "model", "reg", "optimizer", "schedule", "callbacks", "trainer", "mlflow"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
AUGMENTATION = (
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomTranslation,
)


class FakeSplits:
    """Just what build_model reads; the digits shape and class count."""

    input_shape = (8, 8, 1)
    num_classes = 10


def layer_counts(model: keras.Model) -> dict[str, int]:
    return {
        "dropout": sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers),
        "batchnorm": sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers),
        "augment": sum(isinstance(layer, AUGMENTATION) for layer in model.layers),
    }


def kernel_factors(model: keras.Model) -> set[tuple[float, float]]:
    """(l1, l2) of every kernel regulariser in the model; empty when there are none."""
    factors = set()
    for layer in model.layers:
        regularizer = getattr(layer, "kernel_regularizer", None)
        if regularizer is not None:
            config = regularizer.get_config()
            factors.add((round(config.get("l1", 0.0), 10), round(config.get("l2", 0.0), 10)))
    return factors


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(compose_cfg, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "npz":
        overrides.append("data.path=/some/file.npz")
    cfg = compose_cfg(*overrides)
    if group == "schedule" and option != "constant":
        # a schedule switches plateau reduction off: they would fight over the rate
        assert cfg.callbacks.reduce_lr_on_plateau is None
    check_config(cfg)  # every shipped option is valid as it stands


@pytest.mark.parametrize("key", ["mlflow.metrics_interval_s", "mlflow.checkpoint_interval_s", "mlflow.flush_timeout_s"])
def test_the_tracking_intervals_refuse_negative_seconds_and_take_zero(compose_cfg, key):
    check_config(compose_cfg(f"{key}=0"))
    with pytest.raises(ConfigError) as refused:
        check_config(compose_cfg(f"{key}=-1"))
    expected = "a number of seconds >= 0"
    if key == "mlflow.checkpoint_interval_s":  # null: no background writes, the default
        check_config(compose_cfg(f"{key}=null"))
        expected = "null (no writes during training) or a number of seconds >= 0"
    assert str(refused.value) == f"{key}=-1: expected {expected}"


def test_run_tags_must_be_a_mapping(compose_cfg):
    check_config(compose_cfg("+mlflow.tags.team=vision"))
    with pytest.raises(ConfigError) as refused:
        check_config(compose_cfg("mlflow.tags=vision"))
    assert (
        str(refused.value)
        == "mlflow.tags='vision': expected a mapping of tag names to values, e.g. +mlflow.tags.team=vision"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mlflow.run_name=${model.name}-${reg.nope}", "mlflow.run_name: Interpolation key 'reg.nope' not found"),
        (
            "trainer.seed=${oc.env:NO_SUCH_VARIABLE_HERE}",
            "trainer.seed: KeyError raised while resolving interpolation: "
            "\"Environment variable 'NO_SUCH_VARIABLE_HERE' not found\"",
        ),
        ("+mlflow.tags.team=${team:vision}", "mlflow.tags.team: Unsupported interpolation type team"),
    ],
)
def test_an_interpolation_that_cannot_resolve_is_named_by_its_key(compose_cfg, override, message):
    check_config(compose_cfg("mlflow.run_name=${model.name}-${optimizer.learning_rate}"))  # one that resolves is fine
    with pytest.raises(ConfigError) as refused:
        check_config(compose_cfg(override))
    assert str(refused.value) == message


def test_defaults_are_digits_cnn_without_regularisation(compose_cfg):
    cfg = compose_cfg()
    assert (cfg.data.name, cfg.model.name, regularisation_label(cfg.reg)) == ("digits", "cnn", "none")
    assert cfg.mlflow.tracking_uri is None
    assert set(cfg.callbacks) == {
        "early_stopping",
        "model_checkpoint",
        "reduce_lr_on_plateau",
        "tensorboard",
        "csv_logger",
        "terminate_on_nan",
        "backup_and_restore",
    }


REG_EXPECTED = {
    # option: (dropout layers > 0, batchnorm layers > 0, augmentation layers > 0, kernel (l1, l2))
    "none": (False, False, False, set()),
    "l1": (False, False, False, {(1e-5, 0.0)}),
    "l2": (False, False, False, {(0.0, 1e-4)}),
    "l1_l2": (False, False, False, {(1e-5, 1e-4)}),
    "dropout": (True, False, False, set()),
    "batchnorm": (False, True, False, set()),
    "augment": (False, False, True, set()),
    "combined": (True, True, True, {(0.0, 1e-4)}),
    "[l2,dropout]": (True, False, False, {(0.0, 1e-4)}),
}


@pytest.mark.parametrize(("model_name", "reg"), list(itertools.product(["mlp", "cnn"], REG_EXPECTED)))
def test_model_has_exactly_the_regularisation_asked_for(compose_cfg, model_name, reg):
    cfg = compose_cfg(f"model={model_name}", f"reg={reg}")
    model = build_model(cfg, FakeSplits(), steps_per_epoch=10)
    dropout, batchnorm, augment, factors = REG_EXPECTED[reg]
    counts = layer_counts(model)
    assert (counts["dropout"] > 0, counts["batchnorm"] > 0, counts["augment"] > 0) == (dropout, batchnorm, augment)
    assert kernel_factors(model) == factors
    assert model.output_shape == (None, 10)


def test_cnn_has_one_block_per_filter_entry(compose_cfg):
    cfg = compose_cfg("model=cnn", "reg=combined", "model.filters=[16,32,64]")
    model = build_model(cfg, FakeSplits(), steps_per_epoch=10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [16, 32, 64]
    # a Dropout after each conv block and after the dense layer, a BatchNorm after each conv
    assert layer_counts(model) == {"dropout": 4, "batchnorm": 3, "augment": 3}


def test_model_adapts_to_input_shape_and_classes(compose_cfg):
    class Cifar:
        input_shape = (32, 32, 3)
        num_classes = 7

    model = build_model(compose_cfg("model=cnn"), Cifar(), steps_per_epoch=10)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 7)


@pytest.mark.parametrize(
    ("reg", "label"),
    [
        ("none", "none"),
        ("l2", "l2"),
        ("[l2,dropout]", "l2+dropout"),
        ("l1_l2", "l1+l2"),
        ("combined", "l2+dropout+batchnorm+augment"),
    ],
)
def test_regularisation_label(compose_cfg, reg, label):
    assert regularisation_label(compose_cfg(f"reg={reg}").reg) == label


def test_callbacks_instantiate_tune_and_remove(compose_cfg):
    cfg = compose_cfg("callbacks.early_stopping.patience=3", "~callbacks.tensorboard")
    callbacks = {type(callback).__name__: callback for callback in build_callbacks(cfg)}
    assert callbacks["EarlyStopping"].patience == 3
    assert "TensorBoard" not in callbacks
    assert set(callbacks) == {
        "EarlyStopping",
        "ModelCheckpoint",
        "ReduceLROnPlateau",
        "CSVLogger",
        "TerminateOnNaN",
        "BackupAndRestore",
    }
    assert build_callbacks(compose_cfg("callbacks=none")) == []


CALLBACK_VALUES_REFUSED = [
    (
        "callbacks.reduce_lr_on_plateau.factor=2",
        "callbacks.reduce_lr_on_plateau.factor=2: expected a number between 0 and 1",
    ),
    (
        "callbacks.reduce_lr_on_plateau.min_lr=-1e-6",
        "callbacks.reduce_lr_on_plateau.min_lr=-1e-06: expected a number >= 0",
    ),
    (
        "callbacks.reduce_lr_on_plateau.cooldown=1.5",
        "callbacks.reduce_lr_on_plateau.cooldown=1.5: expected a whole number of epochs >= 0",
    ),
    (
        "callbacks.early_stopping.patience=soon",
        "callbacks.early_stopping.patience='soon': expected a whole number of epochs >= 0",
    ),
    ("callbacks.early_stopping.min_delta=-0.1", "callbacks.early_stopping.min_delta=-0.1: expected a number >= 0"),
    ("callbacks.early_stopping.mode=maximum", "callbacks.early_stopping.mode='maximum': expected auto, min or max"),
    (
        "callbacks.early_stopping.restore_best_weights=maybe",
        "callbacks.early_stopping.restore_best_weights='maybe': expected true or false",
    ),
]


@pytest.mark.parametrize(("override", "message"), CALLBACK_VALUES_REFUSED)
def test_callback_arguments_keras_would_take_unchecked_are_refused(compose_cfg, override, message):
    with pytest.raises(ConfigError) as refused:
        check_config(compose_cfg(override))
    assert str(refused.value) == message


def test_a_switched_off_callback_is_not_checked(compose_cfg):
    check_config(compose_cfg("callbacks.reduce_lr_on_plateau=null", "callbacks.early_stopping=null"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+callbacks.early_stopping.wait=3",
            "callbacks.early_stopping: EarlyStopping.__init__() got an unexpected keyword argument 'wait'",
        ),
        ("+optimizer.momentum=0.9", "optimizer: Argument(s) not recognized: {'momentum': 0.9}"),
        ("model.filters=32", "model: filters=32: expected a list with one width per conv block, e.g. [32] for one"),
        (
            "model=mlp model.units=256",
            "model: units=256: expected a list with one width per dense block, e.g. [256] for one",
        ),
    ],
)
def test_an_argument_the_class_refuses_is_a_config_error_naming_its_key(compose_cfg, override, message):
    cfg = compose_cfg(*override.split())
    with pytest.raises(ConfigError) as refused:
        build_callbacks(cfg)
        build_model(cfg, FakeSplits(), steps_per_epoch=10)
    assert str(refused.value) == message


def test_step_schedule_drops_the_rate_tenfold_at_each_boundary(compose_cfg):
    cfg = compose_cfg("schedule=step", "schedule.callback.schedule.boundaries=[2,4]")
    scheduler = [c for c in build_callbacks(cfg) if isinstance(c, keras.callbacks.LearningRateScheduler)][0]
    rates = [scheduler.schedule(epoch, None) for epoch in range(6)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


@pytest.mark.parametrize(("schedule", "end_rate"), [("cosine", 0.0), ("exponential", 1e-3 * 0.9**20)])
def test_per_step_schedules_span_the_configured_epochs(compose_cfg, schedule, end_rate):
    cfg = compose_cfg(f"schedule={schedule}", "trainer.epochs=20")
    model = build_model(cfg, FakeSplits(), steps_per_epoch=10)
    rate_schedule = model.optimizer._learning_rate
    assert float(rate_schedule(0)) == pytest.approx(1e-3)
    assert float(rate_schedule(200)) == pytest.approx(end_rate, abs=1e-9)


def test_optimizers_take_the_configured_rate(compose_cfg):
    for name, kind in [
        ("adam", keras.optimizers.Adam),
        ("sgd", keras.optimizers.SGD),
        ("rmsprop", keras.optimizers.RMSprop),
    ]:
        optimizer = instantiate(compose_cfg(f"optimizer={name}", "optimizer.learning_rate=0.005").optimizer)
        assert isinstance(optimizer, kind)
        assert float(optimizer.learning_rate) == pytest.approx(0.005)
    assert instantiate(compose_cfg("optimizer=sgd").optimizer).momentum == 0.9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=1", "data.fold=0"], "data.folds=1: expected null or a whole number of folds >= 2"),
        (["data.fold=2"], "data.fold=2: needs data.folds, the number of folds (e.g. data.folds=5)"),
        (
            ["data.folds=3"],
            "data.folds=3: also give data.fold, the fold that validates (0..2), e.g. -m data.folds=3 data.fold=0,1,2",
        ),
        (["data.folds=3", "data.fold=3"], "data.fold=3: expected a whole number in 0..2 (data.folds=3)"),
        (["data.folds=3", "data.fold=one"], "data.fold='one': expected a whole number in 0..2 (data.folds=3)"),
        (["reg=batchnorm", "reg.batchnorm_momentum=1"], "reg.batchnorm_momentum=1: expected a number in [0, 1)"),
    ],
)
def test_bad_folds_and_momentum_are_refused_by_name(compose_cfg, overrides, message):
    check_config(compose_cfg("data.folds=3", "data.fold=2"))
    with pytest.raises(ConfigError) as refused:
        check_config(compose_cfg(*overrides))
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("monitor", "mode", "direction"),
    [("val_loss", "auto", "minimize"), ("val_accuracy", "auto", "maximize"), ("val_accuracy", "min", "minimize")],
)
def test_a_search_goes_the_way_the_monitored_metric_is_better(compose_cfg, monitor, mode, direction):
    from experiments.search import register

    register()
    cfg = compose_cfg("+experiment=search", f"mlflow.monitor={monitor}", f"mlflow.mode={mode}")
    assert cfg.hydra.sweeper.direction == direction
    assert cfg.hydra.sweeper.n_trials == 20 and cfg.hydra.sweeper.max_failure_rate == 1.0


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: expected a whole number of trials >= 1"),
        (
            ["hydra.sweeper.params={reg.l2: 'interval(1e-3, 0)'}"],
            "reg.l2=interval(1e-3, 0): an interval from 0.001 down to 0: expected the lower bound first",
        ),
        (
            ["hydra.sweeper.params={optimizer.learning_rate: 'tag(log, interval(0, 1e-2))'}"],
            "optimizer.learning_rate=tag(log, interval(0, 1e-2)): a log scale needs a lower bound > 0",
        ),
    ],
)
def test_a_search_space_that_holds_nothing_is_refused_before_the_sweep(compose_cfg, overrides, line):
    from experiments.checks import ConfigError
    from experiments.search import check_sweep_space, register

    register()
    check_sweep_space(compose_cfg("+experiment=search"))  # the shipped search is fine
    with pytest.raises(ConfigError) as refused:
        check_sweep_space(compose_cfg("+experiment=search", *overrides))
    assert str(refused.value) == line


def test_a_swept_range_on_the_command_line_that_holds_nothing_is_refused(compose_cfg):
    from omegaconf import read_write

    from experiments.checks import ConfigError
    from experiments.search import check_sweep_space

    cfg = compose_cfg()
    with read_write(cfg.hydra):  # as Hydra sets it for `-m reg=none trainer.seed=range(5,1) ...`
        cfg.hydra.overrides.task = ["reg=none", "trainer.seed=range(5,1)", "reg.dropout=interval(1,0)"]
    with pytest.raises(ConfigError, match=r"^trainer.seed=range\(5,1\): a range that holds no value"):
        check_sweep_space(cfg)
