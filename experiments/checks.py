"""Refuse bad configuration before TensorFlow loads or an MLflow run exists.

Every rule names the config key and what it accepts, so a user sees one line such as
``reg.dropout=1.5: expected a number in [0, 1)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import CompactHydraException
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_EXPERIMENT_NAME_LENGTH,
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
    _validate_model_name,
    _validate_tag_name,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import regularisers
from experiments.rules import fraction, is_number, is_whole, non_negative, one_of, positive, whole_non_negative
from plugins.errors import first_line
from plugins.metric_names import MODES


class ConfigError(CompactHydraException, ValueError):
    """A config value or input file the runner cannot use; the message is for the user.

    Hydra prints a CompactHydraException as its message alone, so a bad value in one job of a
    sweep reads as one line too.
    """


def _mlflow_accepts(*validations: Callable[[str], None]) -> Callable[[Any], bool]:
    """A rule made of MLflow's own checks of a name (the registry's): what it would refuse at the end
    of training is refused before it."""

    def accepts(value: Any) -> bool:
        try:
            for validate in validations:
                validate(value)
        except Exception:
            return False
        return True

    return accepts


def usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM task or a container may get fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# A registry name or alias MLflow takes; the alias neither ``latest`` nor a version's (``v3``).
_REGISTRY_NAME = _mlflow_accepts(_validate_model_name)
_REGISTRY_ALIAS = _mlflow_accepts(_validate_model_alias_name, _validate_model_alias_name_reserved)

_MODE_WORDS = f"{', '.join(MODES[:-1])} or {MODES[-1]}"  # auto, min or max

# The metrics a run of this runner has (the model is compiled with accuracy).
MONITORABLE = ("loss", "accuracy", "val_loss", "val_accuracy")

RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("optimizer.learning_rate", positive, "a number > 0"),
    # A schedule's own numbers (each where the chosen schedule has it): a rate must stay > 0.
    ("schedule.callback.schedule.factor", lambda v: v is None or positive(v), "a number > 0"),
    ("schedule.learning_rate.alpha", lambda v: v is None or (is_number(v) and 0 <= v <= 1), "a number in [0, 1]"),
    ("schedule.learning_rate.decay_rate", lambda v: v is None or positive(v), "a number > 0"),
    ("trainer.epochs", lambda v: is_whole(v) and v > 0, "a whole number > 0"),
    ("trainer.batch_size", lambda v: is_whole(v) and v > 0, "a whole number > 0"),
    ("trainer.seed", lambda v: is_whole(v) and 0 <= v < 2**32, "a whole number in [0, 2**32)"),
    (
        "trainer.threads",
        lambda v: v is None or (is_whole(v) and 0 < v <= usable_cpus()),
        f"null or a whole number in 1..{usable_cpus()}, the CPUs this process may use",
    ),
    ("trainer.deterministic", one_of(True, False), "true or false"),
    ("trainer.verbose", one_of(0, 1, 2), "0, 1 or 2"),
    ("data.val_fraction", fraction, "a number between 0 and 1"),
    ("data.test_fraction", fraction, "a number between 0 and 1"),
    ("data.folds", lambda v: v is None or (is_whole(v) and v >= 2), "null or a whole number of folds >= 2"),
    ("data.num_classes", lambda v: v is None or (is_whole(v) and v >= 2), "null or a whole number >= 2"),
    ("data.pixel_max", lambda v: v is None or positive(v), "null or a number > 0"),
    ("data.max_gib", lambda v: v is None or positive(v), "a number of GiB > 0"),
    (
        "mlflow.experiment_name",
        lambda v: isinstance(v, str) and v.strip() != "" and len(v) <= MAX_EXPERIMENT_NAME_LENGTH,
        f"a non-empty name of at most {MAX_EXPERIMENT_NAME_LENGTH} characters",
    ),
    (
        "mlflow.tags",
        lambda v: isinstance(v, Mapping),
        "a mapping of tag names to values, e.g. +mlflow.tags.team=vision",
    ),
    ("mlflow.monitor", one_of(*MONITORABLE), ", ".join(MONITORABLE)),
    ("mlflow.mode", one_of(*MODES), _MODE_WORDS),
    ("mlflow.log_every_n_steps", lambda v: v is None or (is_whole(v) and v > 0), "null or a whole number > 0"),
    ("mlflow.metrics_interval_s", non_negative, "a number of seconds >= 0"),
    ("mlflow.log_model", one_of(True, False), "true or false"),
    ("mlflow.wait_for_server_s", non_negative, "a number of seconds >= 0"),
    ("mlflow.flush_timeout_s", non_negative, "a number of seconds >= 0"),
    (
        "mlflow.checkpoint_interval_s",
        lambda v: v is None or non_negative(v),
        "null (no writes during training) or a number of seconds >= 0",
    ),
    ("mlflow.log_system_metrics", one_of(True, False), "true or false"),
    ("mlflow.diagnostics", one_of(True, False), "true or false"),
    ("mlflow.registered_model_name", lambda v: v is None or _REGISTRY_NAME(v), "null or a name without / or :"),
    ("mlflow.register_model_name", lambda v: v is None or _REGISTRY_NAME(v), "null or a name without / or :"),
    (
        "mlflow.registered_model_alias",
        lambda v: v is None or _REGISTRY_ALIAS(v),
        "null or an alias of letters, digits, _ and - (not latest, nor v<number>, which MLflow keeps for itself)",
    ),
]

# Arguments of the callbacks in conf/callbacks/, checked wherever a switched-on callback sets them:
# Keras takes most of them unchecked and fails mid-training, or falls back to mode=auto with a warning.
CALLBACK_ARG_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "mode": (one_of(*MODES), _MODE_WORDS),
    "patience": (whole_non_negative, "a whole number of epochs >= 0"),
    "min_delta": (non_negative, "a number >= 0"),
    "factor": (fraction, "a number between 0 and 1"),
    "cooldown": (whole_non_negative, "a whole number of epochs >= 0"),
    "min_lr": (non_negative, "a number >= 0"),
    "start_from_epoch": (whole_non_negative, "a whole number of epochs >= 0"),
    "restore_best_weights": (one_of(True, False), "true or false"),
}


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value the runner cannot use."""
    _check_data_path(cfg)  # first: data.loader.path interpolates it, and its own message says what to give
    _check_resolvable(cfg)
    _check_regularisers_known(cfg.reg)
    for key, is_allowed, expected in [*_regulariser_rules(), *RULES]:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if not is_allowed(value):
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    _check_fold(cfg.data.get("folds"), cfg.data.get("fold"))
    _check_callbacks(cfg)
    _check_tag_names(cfg.mlflow.tags)
    _check_class_weight_shape(cfg.trainer.class_weight)


def _regulariser_rules() -> list[tuple[str, Callable[[Any], bool], str]]:
    return [(f"reg.{setting.key}", setting.is_allowed, setting.expected) for setting in regularisers.settings()]


def _check_regularisers_known(reg: Mapping) -> None:
    """A reg.* key no regulariser defines would train a model the run is not labelled with."""
    unknown = regularisers.undefined(reg)
    if unknown:
        raise ConfigError(
            f"reg.{unknown[0]}: no regulariser defines it (experiments/regularisers.py), so a run could not "
            "be labelled with it; known: " + ", ".join(setting.key for setting in regularisers.settings())
        )


def _check_tag_names(tags: Mapping) -> None:
    """MLflow's own rule for tag names (characters, length, no path tricks: a file store makes a file
    of each), checked now rather than when the run starts."""
    for name in tags:
        try:
            _validate_tag_name(str(name))
            if len(str(name)) > MAX_ENTITY_KEY_LENGTH:
                raise ValueError(f"longer than {MAX_ENTITY_KEY_LENGTH} characters")
        except Exception as error:
            raise ConfigError(
                f"mlflow.tags.{str(name)[:60]}: expected a tag name of at most {MAX_ENTITY_KEY_LENGTH} letters, "
                f"digits, spaces and _ - . / : ({first_line(error)[:120]})"
            ) from None


def _check_resolvable(cfg: DictConfig) -> None:
    """Every ${...} resolves, e.g. mlflow.run_name='${model.name}-${optimizer.learning_rate}'; one that
    does not is named now, not in a traceback from wherever it is first read."""
    try:
        for key in cfg.keys() - {"hydra"}:  # a config composed in tests carries Hydra's own node
            value = cfg[key]
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{error.full_key}: {first_line(error)}") from None


def _check_fold(folds: int | None, fold: Any) -> None:
    """data.fold names one of data.folds folds; each needs the other."""
    if folds is None and fold is not None:
        raise ConfigError(f"data.fold={fold!r}: needs data.folds, the number of folds (e.g. data.folds=5)")
    if folds is None:
        return
    if fold is None:
        raise ConfigError(
            f"data.folds={folds}: also give data.fold, the fold that validates (0..{folds - 1}), "
            f"e.g. -m data.folds={folds} data.fold={','.join(map(str, range(folds)))}"
        )
    if not (is_whole(fold) and 0 <= fold < folds):
        raise ConfigError(f"data.fold={fold!r}: expected a whole number in 0..{folds - 1} (data.folds={folds})")


def _check_data_path(cfg: DictConfig) -> None:
    if "path" in cfg.data.keys() and OmegaConf.is_missing(cfg.data, "path"):  # `in` skips ??? values
        raise ConfigError(f"data.path is required for data={cfg.data.name}: data.path=/path/to/file.npz")


def _check_callbacks(cfg: DictConfig) -> None:
    for name, callback in (cfg.get("callbacks") or {}).items():
        if callback is None:
            continue  # switched off, e.g. by a schedule
        if not isinstance(callback, Mapping) or "_target_" not in callback:
            raise ConfigError(f"callbacks.{name}: expected a callback config with _target_")
        monitor = callback.get("monitor")
        if monitor is not None and monitor not in MONITORABLE:
            raise ConfigError(f"callbacks.{name}.monitor={monitor!r}: expected one of {', '.join(MONITORABLE)}")
        for arg, (is_allowed, expected) in CALLBACK_ARG_RULES.items():
            if arg in callback and not is_allowed(callback[arg]):
                raise ConfigError(f"callbacks.{name}.{arg}={callback[arg]!r}: expected {expected}")
    schedule = cfg.schedule
    if (schedule.get("learning_rate") or schedule.get("callback")) and cfg.callbacks.get("reduce_lr_on_plateau"):
        raise ConfigError(
            f"callbacks.reduce_lr_on_plateau and schedule={schedule.name} would fight over the learning "
            "rate: remove one, e.g. ~callbacks.reduce_lr_on_plateau"
        )


def _check_class_weight_shape(class_weight: Any) -> None:
    if class_weight is None or class_weight == "balanced":
        return
    if not isinstance(class_weight, Mapping) or not class_weight:
        raise ConfigError(
            f"trainer.class_weight={class_weight!r}: expected null, balanced or a mapping {{class: weight}}"
        )
    for label, weight in class_weight.items():
        if not is_whole(label) or label < 0 or not positive(weight):
            raise ConfigError(
                f"trainer.class_weight: {label!r}: {weight!r} is not allowed: "
                "expected class labels >= 0 mapped to weights > 0"
            )


def check_class_weight_labels(class_weight: Any, num_classes: int) -> None:
    """Class-weight labels must be classes of the data set (known once it is loaded)."""
    if isinstance(class_weight, Mapping):
        unknown = sorted(label for label in class_weight if label >= num_classes)
        if unknown:
            raise ConfigError(
                f"trainer.class_weight names classes {unknown} but the data has classes 0..{num_classes - 1}"
            )
