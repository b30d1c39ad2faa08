"""Overrides read back from a run (its hydra/overrides.yaml) are data, never code.

``resume=RUN_ID`` and ``experiments.reproduce RUN_ID`` re-apply a run's logged overrides. Anyone who
can write that artifact (a shared server, a copied store) could add an object for Hydra to build on
the machine of whoever resumes or reproduces. Only overrides of the project's own config keys and
groups are re-applied: no ``_target_`` (or any key Hydra reads as an instruction: ``_partial_``, ...),
no resolver call (``${oc.env:...}``), no new ``+key`` outside ``mlflow.tags``, no group option that
``conf/`` does not hold.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException

from experiments.checks import ConfigError

CONF = Path(__file__).resolve().parent.parent / "conf"
ADDABLE = ("mlflow.tags.",)  # where a run may add keys of its own (+mlflow.tags.team=vision)
_RESOLVER = re.compile(r"\$\{[^}]*:")  # ${oc.env:HOME}, ${oc.decode:...}: a call, not a reference


def checked_overrides(run_id: str, overrides: list[Any]) -> list[str]:
    """The run's logged overrides, each checked; a ConfigError naming the run and the first refused."""
    parser = OverridesParser.create()
    for override in overrides:
        if not isinstance(override, str):
            raise ConfigError(f"run {run_id}: its logged override {override!r:.80} is not an override")
        reason = _refusal(parser, override)
        if reason:
            raise ConfigError(f"run {run_id}: its logged override {override[:120]} is not re-applied: {reason}")
    return list(overrides)


def _refusal(parser: OverridesParser, override: str) -> str | None:
    try:
        parsed = parser.parse_overrides([override])[0]
    except HydraException:
        return "it is not a Hydra override"
    if parsed.is_sweep_override():
        return "a sweep is not one run's config"
    key = parsed.key_or_group
    if any(part.startswith("_") for part in re.split(r"[./]", key)) or _instructs(parsed.value()):
        return "Hydra would build an object or call a resolver from it"
    if parsed.type == OverrideType.DEL:
        return None
    if key in _groups():
        options = _options(key)
        chosen = parsed.value() if isinstance(parsed.value(), list) else [parsed.value()]
        unknown = [str(option) for option in chosen if str(option) not in options]
        return f"{key} has no option {', '.join(unknown)}" if unknown else None
    if parsed.type in (OverrideType.ADD, OverrideType.FORCE_ADD) and not key.startswith(ADDABLE):
        return "it adds a key the project does not define"
    return None


def _instructs(value: Any) -> bool:
    """Whether a value holds a key Hydra acts on (``_target_``, ...) or a resolver call, at any depth."""
    if isinstance(value, dict):
        return any(str(key).startswith("_") or _instructs(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_instructs(item) for item in value)
    return isinstance(value, str) and bool(_RESOLVER.search(value))


def _groups() -> set[str]:
    return {folder.name for folder in CONF.iterdir() if folder.is_dir()}


def _options(group: str) -> set[str]:
    return {path.stem for path in (CONF / group).glob("*.yaml")}
