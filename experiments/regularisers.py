"""Every regulariser the runner knows, defined once: its switch under ``reg.`` (a factor > 0, or
true), the settings that matter only while it is on, and the rule for each. A run's label
(``reg.name`` and the ``reg`` tag: ``none``, ``l2+dropout``, ...), the params it logs and the checks
of ``reg.*`` all derive from REGULARISERS, and a ``reg.*`` key no regulariser defines is refused: an
option added to conf/ alone can never be labelled ``none`` and pooled with the plain runs.

A new regulariser: its entry here, its defaults in conf/train.yaml (and an option in conf/reg/), its
layers in experiments/models.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from experiments.rules import non_negative, one_of, rate


@dataclass(frozen=True)
class Setting:
    key: str  # under reg.
    is_allowed: Callable[[Any], bool]
    expected: str  # what the error line says it must be


@dataclass(frozen=True)
class Regulariser:
    switch: Setting  # its name is the regulariser's part of a run's label
    settings: tuple[Setting, ...] = ()  # matter only while it is on

    @property
    def name(self) -> str:
        return self.switch.key

    def is_on(self, reg: Mapping[str, Any]) -> bool:
        return bool(reg[self.name])  # a factor > 0, or true


BOOLEAN = (one_of(True, False), "true or false")
REGULARISERS = (
    Regulariser(Setting("l1", non_negative, "a number >= 0")),
    Regulariser(Setting("l2", non_negative, "a number >= 0")),
    Regulariser(Setting("dropout", rate, "a number in [0, 1)")),
    Regulariser(Setting("batchnorm", *BOOLEAN), (Setting("batchnorm_momentum", rate, "a number in [0, 1)"),)),
    Regulariser(
        Setting("augment", *BOOLEAN),
        (
            Setting(
                "flip",
                one_of(None, "horizontal", "vertical", "horizontal_and_vertical"),
                "null, horizontal, vertical or horizontal_and_vertical",
            ),
            Setting("rotation", non_negative, "a number >= 0"),
            Setting("zoom", rate, "a number in [0, 1)"),
            Setting("translation", rate, "a number in [0, 1)"),
        ),
    ),
)


def label(reg: Mapping[str, Any]) -> str:
    """'none', 'l2', 'l2+dropout', ...: what the model really has, whichever options set it."""
    return "+".join(regulariser.name for regulariser in REGULARISERS if regulariser.is_on(reg)) or "none"


def settings() -> list[Setting]:
    """Every ``reg.*`` key with its rule: each regulariser's switch, then its settings."""
    return [setting for regulariser in REGULARISERS for setting in (regulariser.switch, *regulariser.settings)]


def switched_by() -> dict[str, str]:
    """``reg.zoom`` -> ``reg.augment``: the param that matters only while the other is on."""
    return {
        f"reg.{setting.key}": f"reg.{regulariser.name}"
        for regulariser in REGULARISERS
        for setting in regulariser.settings
    }


def undefined(reg: Mapping[str, Any]) -> list[str]:
    """The ``reg.*`` keys of a config that no regulariser defines (``_target_`` aside)."""
    known = {setting.key for setting in settings()}
    return [str(key) for key in reg if not str(key).startswith("_") and key not in known]
