"""One redaction rule for every value that leaves the process: params, tags, artifacts, run names,
log lines and error lines.

A value is secret when its key's last part names one (``password``, ``token``, ``secret``, ``key``:
``db.password``, ``mlflow.tags.api_key``); a URL's credentials (``scheme://user:pass@host``) are
secret wherever the URL appears, whatever its key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"password|passwd|token|secret|key|credential", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:[redacted]@host (a user name alone is no secret)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def is_secret(key: str) -> bool:
    """Keys such as db.password or mlflow.tags.api_token: their values never leave the process."""
    return bool(_SECRET_KEY.search(str(key).rsplit(".", 1)[-1]))


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced."""
    return _URL_CREDENTIALS.sub(lambda match: f"{match['scheme']}{match['user']}:{REDACTED}@", text)


def redact_value(key: str, value: Any) -> Any:
    """``value`` as it may leave the process under ``key``."""
    if is_secret(key):
        return REDACTED
    return redact_text(value) if isinstance(value, str) else value


def redact(config: Any) -> Any:
    """A copy of a nested config with secret values replaced."""
    if isinstance(config, Mapping):
        return {key: REDACTED if is_secret(str(key)) else redact(value) for key, value in config.items()}
    if isinstance(config, list):
        return [redact(item) for item in config]
    return redact_text(config) if isinstance(config, str) else config


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names to values (tags, params), each redacted by its own name."""
    return {key: redact_value(key, value) for key, value in values.items()}


def redact_override(override: str) -> str:
    """``db.password=hunter2`` -> ``db.password=[redacted]``; a URL's password in any override's value too."""
    key, equals, _ = override.partition("=")
    if equals and is_secret(key.lstrip("+~")):
        return f"{key}={REDACTED}"
    return redact_text(override)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through the rule, so no handler prints a secret: a launcher
    that logs a job's overrides, an error that names a URL with its password."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: logging reports that itself, at emit
            return True
        redacted = redact_text(_redact_assignments(message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction() -> None:
    """Add the RedactingFilter to every handler of the root logger (once each)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())


def redact_tree(data: Any) -> Any:
    """A copy of data read from a YAML or JSON file, with every secret replaced: values under secret
    keys, URL passwords, and ``key=value`` assignments of secret keys inside strings (Hydra keeps the
    overrides as typed, one string each or joined by commas)."""
    if isinstance(data, Mapping):
        return {key: REDACTED if is_secret(str(key)) else redact_tree(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redact_tree(item) for item in data]
    return redact_text(_redact_assignments(data)) if isinstance(data, str) else data


def _redact_assignments(message: str) -> str:
    """``... mlflow.tags.api_key=abc ...`` in a line of overrides -> ``mlflow.tags.api_key=[redacted]``.
    A value runs to the next blank, or to a comma that starts the next ``key=`` (Hydra's
    ``override_dirname`` joins overrides with commas; a list value such as ``[l2,dropout]`` has them too)."""
    return re.sub(
        r"(?P<key>[+~]*[\w.]+)=(?P<value>[^\s,]+(?:,(?![+~]*[\w.]+=)[^\s,]*)*)",
        lambda match: redact_override(match[0]) if is_secret(match["key"].lstrip("+~")) else match[0],
        message,
    )
