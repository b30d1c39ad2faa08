"""One redaction rule for every value that leaves the process: params, tags, artifacts, run names,
log lines and error lines.

A value is secret when its key's last part names one (``password``, ``token``, ``secret``, ``key``:
``db.password``, ``mlflow.tags.api_key``); a URL's credentials (``scheme://user:pass@host``) are
secret wherever the URL appears, whatever its key. In text (an override, a log line, a Hydra file)
the rule finds each form a value takes: ``key=value``, ``key: value`` inside a dict
(``+db={password: ...}``, a printed ``{'db.password': ...}``) and Hydra's escaped URLs
(``postgresql\\://user\\:PASS@host``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"password|passwd|token|secret|key|credential", re.IGNORECASE)
# scheme://user:password@host -> scheme://user:[redacted]@host (a user name alone is no secret); Hydra
# escapes the colons of an override's value: scheme\://user\:password@host.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*\\?://)(?P<user>[^:/@\s\\]*)(?P<colon>\\?:)(?P<password>[^@/\s]+)@"
)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")  # a line break forges a log line
# key: value inside a dict as Hydra takes it ({password: x}) or Python prints it ({'password': 'x'}).
_MAPPING = re.compile(
    r"""(?P<key>(?P<quote>["']?)[+~]*[\w.-]+(?P=quote))(?P<colon>\s*:\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|\[[^\]]*\]|[^\s,{}\[\]]+)"""
)


def is_secret(key: str) -> bool:
    """Keys such as db.password or mlflow.tags.api_token: their values never leave the process."""
    return bool(_SECRET_KEY.search(str(key).rsplit(".", 1)[-1]))


def redact_text(text: str) -> str:
    """``text`` with every secret in it replaced: a URL's password, the value of a secret key given as
    ``key=value`` or ``key: value``."""
    text = _URL_CREDENTIALS.sub(lambda match: f"{match['scheme']}{match['user']}{match['colon']}{REDACTED}@", text)
    text = _MAPPING.sub(
        lambda match: (
            f"{match['key']}{match['colon']}{REDACTED}"
            if is_secret(match["key"].strip("\"'").lstrip("+~"))
            else match[0]
        ),
        text,
    )
    return _redact_assignments(text)


def one_line(text: str) -> str:
    """Text read back from a store (a run or experiment name), as it may reach a log or console line:
    redacted, with no line break or other control character to forge a line of its own."""
    return CONTROL_CHARACTERS.sub("?", redact_text(str(text)))


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
    """``db.password=hunter2`` -> ``db.password=[redacted]``; a URL's password, or a secret key's value
    in a dict (``+db={password: ...}``), in any override's value too."""
    key, equals, _ = override.partition("=")
    if equals and is_secret(key.lstrip("+~")):
        return f"{key}={REDACTED}"
    return redact_text(override)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message through the rule, so no handler prints a secret: a launcher that
    logs a job's overrides, an error that names a URL with its password."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: logging reports that itself, at emit
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingStream:
    """A console stream (sys.stdout, sys.stderr) whose every write goes through the rule: Hydra writes
    a failed job's overrides straight to stderr, past logging."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: Any) -> int:
        return self._stream.write(redact_text(text) if isinstance(text, str) else text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_log_redaction() -> None:
    """Redact every log record as it is made, whichever logger makes it and whatever handlers print
    it (a filter on the handlers would not last: Hydra's launchers configure logging anew before they
    log each job's overrides), and every write to the console."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return
    redacting = RedactingFilter()

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redacting.filter(record)
        return record

    redacted_record.redacts = True
    logging.setLogRecordFactory(redacted_record)


def redact_tree(data: Any) -> Any:
    """A copy of data read from a YAML or JSON file, with every secret replaced: values under secret
    keys, URL passwords, and ``key=value`` assignments of secret keys inside strings (Hydra keeps the
    overrides as typed, one string each or joined by commas)."""
    if isinstance(data, Mapping):
        return {key: REDACTED if is_secret(str(key)) else redact_tree(value) for key, value in data.items()}
    if isinstance(data, list):
        return [redact_tree(item) for item in data]
    return redact_text(data) if isinstance(data, str) else data


def _redact_assignments(message: str) -> str:
    """``... mlflow.tags.api_key=abc ...`` in a line of overrides -> ``mlflow.tags.api_key=[redacted]``.
    A value runs to the next blank, or to a comma that starts the next ``key=`` (Hydra's
    ``override_dirname`` joins overrides with commas; a list value such as ``[l2,dropout]`` has them too)."""
    return re.sub(
        r"(?P<key>[+~]*[\w.]+)=(?P<value>[^\s,]+(?:,(?![+~]*[\w.]+=)[^\s,]*)*)",
        lambda match: f"{match['key']}={REDACTED}" if is_secret(match["key"].lstrip("+~")) else match[0],
        message,
    )
