"""A sweep's search space: the direction a hyperparameter search takes, from the monitored metric
(conf/experiment/search.yaml reads it as ``${search_direction:${mlflow.monitor},${mlflow.mode}}``),
and the checks of its ranges and trials before the sweep's parent run is made."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from experiments.checks import ConfigError
from experiments.rules import is_whole
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


def check_sweep_space(config: DictConfig) -> None:
    """A search's number of trials and every swept range (the command's and the sweeper's params):
    one that holds no value (``interval(1,0)``, ``range(5,1)``) or that a log scale cannot take is a
    ConfigError naming it, before a parent run exists (Optuna would fail with a traceback after)."""
    sweeper = config.hydra.sweeper
    trials = sweeper.get("n_trials")
    if "n_trials" in sweeper and not (is_whole(trials) and trials >= 1):
        raise ConfigError(f"hydra.sweeper.n_trials={trials!r}: expected a whole number of trials >= 1")
    params = sweeper.get("params")
    swept = [f"{key}={value}" for key, value in (params.items() if isinstance(params, Mapping) else [])]
    parser = OverridesParser.create()
    for override in [*swept, *config.hydra.overrides.task]:
        try:
            parsed = parser.parse_overrides([override])[0]
        except HydraException:
            continue  # not one Hydra reads as a sweep: Hydra says so itself
        problem = _empty_space(parsed.value())
        if problem:
            raise ConfigError(f"{override}: {problem}")


def _empty_space(space) -> str | None:
    if isinstance(space, IntervalSweep):
        if space.start > space.end:
            return f"an interval from {space.start:g} down to {space.end:g}: expected the lower bound first"
        if "log" in space.tags and space.start <= 0:
            return "a log scale needs a lower bound > 0"
    if isinstance(space, RangeSweep) and (space.stop - space.start) * (space.step or 0) <= 0:
        return "a range that holds no value (start, stop and step disagree)"
    return None
