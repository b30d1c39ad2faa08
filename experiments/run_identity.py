"""What a run is called and which params define it: what a person reads in the MLflow UI.

The params hold what defines the training and nothing else: no ``None``, no ``_target_`` (or any
key Hydra acts on), no output paths, no settings of a part that is switched off, none of the
tracking settings but the monitor. The whole resolved config stays in the run's
``hydra/config.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.command import override_key
from plugins.params import flatten

# Settings of how the run is tracked, printed or resumed: they change no result.
NOT_TRAINING = ("resume", "trainer.verbose", "trainer.threads")
KEPT_TRACKING = ("mlflow.monitor", "mlflow.mode")  # they pick the weights the test split is run with
# Keras callbacks that record training without changing it.
RECORDING_CALLBACKS = {
    f"keras.callbacks.{name}" for name in ("ModelCheckpoint", "TensorBoard", "CSVLogger", "BackupAndRestore")
}
# Augmentation's settings matter only with reg.augment on.
AUGMENTATION = ("reg.flip", "reg.rotation", "reg.zoom", "reg.translation")
# Overrides a run's name leaves out: already in it (model, reg), or no part of what is trained.
UNNAMED = ("model", "reg", "mlflow", "hydra", "resume", "trainer.verbose", "trainer.threads")
NAME_PART_CHARS = 32
NAME_CHARS = 100


def regularisation_label(reg: DictConfig) -> str:
    """'none', 'l2', 'l2+dropout', ...: what the model really has, whichever options set it."""
    parts = [name for name in ("l1", "l2", "dropout") if reg[name] > 0]
    parts += [name for name in ("batchnorm", "augment") if reg[name]]
    return "+".join(parts) or "none"


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
    return not (key in AUGMENTATION and not flat.get("reg.augment"))


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """``cnn-l2``, then the overrides that change what is trained (shortened where long):
    ``cnn-l2 schedule=step``. Two runs that differ only in a schedule or a rate differ in name."""
    name = f"{cfg.model.name}-{regularisation_label(cfg.reg)}"
    for override in overrides:
        key = override_key(override)
        if any(key == unnamed or key.startswith(f"{unnamed}.") for unnamed in UNNAMED) or "=" not in override:
            continue
        # A deep key by its last two parts: schedule.callback.schedule.boundaries -> schedule.boundaries.
        part = ".".join(key.split(".")[-2:]) + "=" + override.split("=", 1)[1]
        part = part if len(part) <= NAME_PART_CHARS else part[: NAME_PART_CHARS - 1] + "…"
        if len(name) + 1 + len(part) > NAME_CHARS:
            return name + " …"
        name += f" {part}"
    return name
