"""Turn nested configs into MLflow params: dotted keys, MLflow's naming and length rules, no secrets
(plugins.redaction's rule)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Param
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from plugins.redaction import redact_value

TRUNCATED = "...[truncated]"
_NOT_ALLOWED_IN_NAMES = re.compile(r"[^\w.\- /]")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'reg': {'l2': 0.1}} -> {'reg.l2': 0.1}; lists stay one value."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def sanitize_name(name: str) -> str:
    """Replace characters MLflow refuses in param and metric names; cut to its length limit."""
    return _NOT_ALLOWED_IN_NAMES.sub("_", str(name))[:MAX_ENTITY_KEY_LENGTH]


def param_value(value: Any) -> str:
    text = str(value)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        text = text[: MAX_PARAM_VAL_LENGTH - len(TRUNCATED)] + TRUNCATED
    return text


def to_params(flat: Mapping[str, Any]) -> list[Param]:
    return [Param(sanitize_name(name), param_value(redact_value(name, value))) for name, value in flat.items()]


def batches(items: list, size: int = MAX_PARAMS_TAGS_PER_BATCH) -> list[list]:
    """MLflow takes at most 100 params per log_batch call."""
    return [items[start : start + size] for start in range(0, len(items), size)]
