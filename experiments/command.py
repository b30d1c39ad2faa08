"""The train command line of a run: built once from its overrides, and read back the same way."""

from __future__ import annotations

import shlex

TRAIN = ("python", "-m", "experiments.train")


def train_command(overrides: list[str]) -> str:
    """``python -m experiments.train model=cnn reg=l2``: what re-runs a configuration."""
    return shlex.join([*TRAIN, *overrides])


def overrides_of(command: str) -> list[str]:
    """The overrides of a command line train_command made; none for any other text (an edited tag,
    a run another tool made)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    return words[len(TRAIN) :] if tuple(words[: len(TRAIN)]) == TRAIN else []


def override_key(override: str) -> str:
    """``+mlflow.tags.team=vision`` -> ``mlflow.tags.team``."""
    return override.split("=", 1)[0].lstrip("+~")


def without_keys(overrides: list, given: list[str]) -> list:
    """A run's overrides less those whose key a command gives again (the command's replace them)."""
    keys = {override_key(override) for override in given}
    return [override for override in overrides if override_key(str(override)) not in keys]
