"""The direction a hyperparameter search takes, from the monitored metric: conf/experiment/search.yaml
reads it as ``${search_direction:${mlflow.monitor},${mlflow.mode}}``."""

from __future__ import annotations

from omegaconf import OmegaConf

from plugins.metric_names import higher_is_better


def search_direction(monitor: str, mode: str) -> str:
    """Optuna's ``minimize`` or ``maximize``: mlflow.mode, or with ``auto`` the way the monitored
    metric is better (val_loss down, val_accuracy up)."""
    if mode in ("min", "max"):
        return "minimize" if mode == "min" else "maximize"
    return "maximize" if higher_is_better(monitor) else "minimize"


def register() -> None:
    if not OmegaConf.has_resolver("search_direction"):
        OmegaConf.register_new_resolver("search_direction", search_direction)
