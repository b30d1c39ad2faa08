"""Overrides read back from a run (its hydra/overrides.yaml) are data, never code.

``resume=RUN_ID`` and ``experiments.reproduce RUN_ID`` re-apply a run's logged overrides. Anyone who
can write that artifact (a shared server, a copied store) can put anything in it. A run gives back
only what defines its training, from an allow-list (TRAINING), checked value by value:

- refused (a ConfigError naming the run and the override): an object for Hydra to build
  (``_target_``, ``_partial_``, ...), a resolver call (``${oc.env:...}``), a control character, a new
  ``+key`` outside ``mlflow.tags``, a group option ``conf/`` does not hold, anything not an override;
- left out, with the keys named in one warning: what says where to write (every callback's output
  path, a data file outside the working folder), where to send (``mlflow.tracking_uri``), how to log
  or launch (``hydra.*``, ``hydra/launcher``, ``trainer.verbose``, the model registry) and what the
  machine gives (``trainer.threads``). Those are always this command's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException

from experiments import CONF
from experiments.checks import ConfigError
from experiments.preflight import OUTPUT_PATHS
from plugins.redaction import CONTROL_CHARACTERS, one_line

ADDABLE = ("mlflow.tags.",)  # where a run may add keys of its own (+mlflow.tags.team=vision)
# What defines the training: a group (its option) or a key under one of these prefixes.
TRAINING_GROUPS = {"model", "reg", "optimizer", "schedule", "data", "callbacks", "experiment"}
TRAINING = (
    *(f"{group}." for group in ("model", "reg", "optimizer", "schedule", "data", "callbacks")),
    *(f"trainer.{key}" for key in ("epochs", "batch_size", "seed", "class_weight", "deterministic")),
    *(f"mlflow.{key}" for key in ("monitor", "mode", "run_name", "experiment_name", "tags.")),
)
_RESOLVER = re.compile(r"\$\{[^}]*:")  # ${oc.env:HOME}, ${oc.decode:...}: a call, not a reference
_REFERENCE = re.compile(r"\$\{\s*([^}]*?)\s*\}")  # ${model.name}: another key's value


@dataclass(frozen=True)
class LoggedOverrides:
    """A run's logged overrides split by the allow-list: the ones re-applied and the keys left out."""

    kept: list[str]
    left_out: list[str]

    def warning(self, run_id: str) -> str | None:
        """One line naming what was left out (keys only: a value may be a secret), or None."""
        if not self.left_out:
            return None
        return f"run {run_id}: not re-applied, this command's own settings are used instead: {', '.join(self.left_out)}"


def checked_overrides(run_id: str, overrides: list[Any]) -> LoggedOverrides:
    """The run's logged overrides, each checked; a ConfigError naming the run and the first refused."""
    parser = OverridesParser.create()
    kept, left_out = [], []
    for override in overrides:
        if not isinstance(override, str):
            raise ConfigError(f"run {run_id}: its logged override {override!r:.80} is not an override")
        shown = one_line(override[:120])
        parsed, reason = _parsed(parser, override)
        if reason:
            raise ConfigError(f"run {run_id}: its logged override {shown} is not re-applied: {reason}")
        if _defines_training(parsed):
            kept.append(override)
        else:
            left_out.append(one_line(parsed.key_or_group[:80]))
    return LoggedOverrides(kept, left_out)


def _parsed(parser: OverridesParser, override: str):
    """(the parsed override, None), or (None, why it is refused)."""
    if CONTROL_CHARACTERS.search(override):
        return None, "it holds a control character (a line break, ...)"
    try:
        parsed = parser.parse_overrides([override])[0]
    except HydraException:
        return None, "it is not a Hydra override"
    if parsed.is_sweep_override():
        return None, "a sweep is not one run's config"
    key = parsed.key_or_group
    if any(part.startswith("_") for part in re.split(r"[./]", key)) or _instructs(parsed.value()):
        return None, "Hydra would build an object, call a resolver or copy another setting from it"
    if parsed.type == OverrideType.DEL:
        return parsed, None
    if key in _groups():
        options = _options(key)
        chosen = parsed.value() if isinstance(parsed.value(), list) else [parsed.value()]
        unknown = [str(option) for option in chosen if str(option) not in options]
        return (None, f"{key} has no option {', '.join(unknown)}") if unknown else (parsed, None)
    if parsed.type in (OverrideType.ADD, OverrideType.FORCE_ADD) and not key.startswith(ADDABLE):
        return None, "it adds a key the project does not define"
    return parsed, None


def _defines_training(parsed) -> bool:
    """Whether the override sets what is trained, and nothing that says where to write, send or log."""
    key = parsed.key_or_group
    if key in TRAINING_GROUPS:
        return True
    if not key.startswith(TRAINING) or key.rsplit(".", 1)[-1] in OUTPUT_PATHS:
        return False
    if parsed.type == OverrideType.DEL:
        return True
    value = parsed.value()
    if key.startswith("callbacks.") and _names_output_path(value):
        return False  # callbacks.tensorboard={log_dir: ...}
    return key != "data.path" or _inside_working_folder(value)


def _names_output_path(value: Any) -> bool:
    if isinstance(value, dict):
        return any(str(key) in OUTPUT_PATHS or _names_output_path(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_names_output_path(item) for item in value)
    return False


def _inside_working_folder(path: Any) -> bool:
    """A data file the run names relatively, below the folder the command runs in: no other file of
    the user's is read (and a few of its examples logged)."""
    if not isinstance(path, str) or path.startswith("~"):
        return False
    pure = PurePath(path)
    return not pure.is_absolute() and ".." not in pure.parts


def _instructs(value: Any) -> bool:
    """Whether a value holds a key Hydra acts on (``_target_``, ...) or a resolver call, at any depth."""
    if isinstance(value, dict):
        return any(str(key).startswith("_") or _instructs(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_instructs(item) for item in value)
    return isinstance(value, str) and (bool(_RESOLVER.search(value)) or _copies_other_settings(value))


def _copies_other_settings(text: str) -> bool:
    """A reference to a key outside the allow-list (``${mlflow.tracking_uri}``, ``${hydra.run.dir}``)
    would copy this machine's settings, a secret among them, into a run name or a tag."""
    return any(not (reference + ".").startswith(TRAINING) for reference in _REFERENCE.findall(text))


def _groups() -> set[str]:
    return {folder.name for folder in CONF.iterdir() if folder.is_dir()}


def _options(group: str) -> set[str]:
    return {path.stem for path in (CONF / group).glob("*.yaml")}
