"""What a run is called and which params define it: what a person reads in the MLflow UI.

The params hold what defines the training and nothing else: no ``None``, no ``_target_`` (or any
key Hydra acts on), no output paths, no settings of a part that is switched off, none of the
tracking settings but the monitor. The whole resolved config stays in the run's
``hydra/config.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import regularisers
from experiments.command import override_key
from plugins.params import flatten

# Settings of how the run is tracked, printed or resumed: they change no result.
NOT_TRAINING = ("resume", "trainer.verbose", "trainer.threads")
KEPT_TRACKING = ("mlflow.monitor", "mlflow.mode")  # they pick the weights the test split is run with
# Keras callbacks that record training without changing it.
RECORDING_CALLBACKS = {
    f"keras.callbacks.{name}" for name in ("ModelCheckpoint", "TensorBoard", "CSVLogger", "BackupAndRestore")
}
SWITCHED = regularisers.switched_by()  # settings that matter only with their part switched on
# Overrides a run's name leaves out: already in it (model, reg), no part of what is trained, or the
# study every job of a sweep shares (+experiment=..., whose MLflow experiment holds the runs).
UNNAMED = ("model", "reg", "mlflow", "hydra", "resume", "trainer.verbose", "trainer.threads", "experiment")
ABSENT = object()  # what OmegaConf.select gives for a key a config lacks (None is a value)
NAME_PART_CHARS = 32
NAME_CHARS = 100


def regularisation_label(reg: DictConfig) -> str:
    """'none', 'l2', 'l2+dropout', ...: what the model really has, whichever options set it."""
    return regularisers.label(reg)


def training_params(cfg: DictConfig) -> dict[str, Any]:
    """The config's params (dotted keys) that define the training, with ``reg.name``."""
    resolved = {key: _resolved(cfg[key]) for key in cfg if key != "hydra"}
    resolved["callbacks"] = _training_callbacks(resolved.get("callbacks") or {})
    flat = flatten(resolved)
    params = {key: value for key, value in flat.items() if _defines_training(key, value, flat)}
    params["reg.name"] = regularisation_label(cfg.reg)
    params["optimizer.name"] = str(cfg.optimizer._target_).rsplit(".", 1)[-1].lower()  # its _target_ is not a param
    return params


def _training_callbacks(callbacks: Mapping[str, Any]) -> dict[str, Any]:
    """The callbacks that change training (early stopping, plateaus, a NaN stop); one with no
    setting of its own is ``true``. Those that only record (checkpoints, CSV, TensorBoard, backups) go."""
    kept = {}
    for name, callback in callbacks.items():
        if not isinstance(callback, Mapping) or callback.get("_target_") in RECORDING_CALLBACKS:
            continue
        settings = {key: value for key, value in callback.items() if not key.startswith("_")}
        kept[name] = settings or True
    return kept


def _resolved(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _defines_training(key: str, value: Any, flat: Mapping[str, Any]) -> bool:
    last = key.rsplit(".", 1)[-1]
    if value is None or (isinstance(value, Mapping) and not value) or last.startswith("_"):
        return False
    if key in NOT_TRAINING:
        return False
    if key.startswith("mlflow.") and key not in KEPT_TRACKING:
        return False
    return not (key in SWITCHED and not flat.get(SWITCHED[key]))


def run_name(
    cfg: DictConfig, overrides: list[str], defaults: DictConfig | None = None, backend: str = "tensorflow"
) -> str:
    """``cnn-l2``, the Keras backend where it is not TensorFlow (``cnn-l2 (jax)``), then the overrides
    that change what is trained (shortened where long): ``cnn-l2 schedule=step``. Two runs that differ
    only in a schedule or a rate differ in name. A value the same as in ``defaults`` (the config
    without the value overrides) is left out: ``trainer.epochs=20`` where 20 is the default."""
    name = f"{cfg.model.name}-{regularisation_label(cfg.reg)}"
    if backend != "tensorflow":
        name += f" ({backend})"
    for override in overrides:
        key = override_key(override)
        if any(key == unnamed or key.startswith(f"{unnamed}.") for unnamed in UNNAMED) or "=" not in override:
            continue
        if defaults is not None and _is_value(cfg, key) and _same(cfg, defaults, key):
            continue
        # A deep key by its last two parts: schedule.callback.schedule.boundaries -> schedule.boundaries.
        part = ".".join(key.split(".")[-2:]) + "=" + override.split("=", 1)[1]
        part = part if len(part) <= NAME_PART_CHARS else part[: NAME_PART_CHARS - 1] + "…"
        if len(name) + 1 + len(part) > NAME_CHARS:
            return name + " …"
        name += f" {part}"
    return name


def composed_defaults(cfg: DictConfig, overrides: list[str]) -> DictConfig | None:
    """This job's config composed with its group choices only (``model=mlp``, ``schedule=step``),
    not its values (``trainer.epochs=20``): what each value is by default. None outside a Hydra app
    or where it cannot be composed (the name then keeps every override)."""
    groups = [override for override in overrides if not _is_value(cfg, override_key(override))]
    if len(groups) == len(overrides):
        return None  # no value to compare
    try:
        return hydra.compose(config_name=HydraConfig.get().job.config_name, overrides=groups)
    except Exception:  # a name is not worth failing a run for
        return None


def _is_value(cfg: DictConfig, key: str) -> bool:
    """A setting (``trainer.epochs``, a list), not a config group's choice, which is a node of its
    own (``model``) or none at all (``+experiment``, which is global)."""
    node = OmegaConf.select(cfg, key, default=ABSENT)
    return node is not ABSENT and not isinstance(node, DictConfig)


def _same(cfg: DictConfig, defaults: DictConfig, key: str) -> bool:
    try:
        default = OmegaConf.select(defaults, key, default=ABSENT)
        return default is not ABSENT and _resolved(OmegaConf.select(cfg, key)) == _resolved(default)
    except OmegaConfBaseException:  # an interpolation only the job resolves: keep the override
        return False
