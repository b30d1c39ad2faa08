"""How an error is shown in one line: in logs, tags and the command line's error lines (with no
URL's password: errors of HTTP clients name the URL they tried)."""

from __future__ import annotations

from plugins.redaction import redact_text


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (library errors run to many lines, and some
    start with a newline), or its type's name when the message is empty."""
    line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return redact_text(line)


def describe(error: BaseException) -> str:
    """``Type: first line``, or the type's name alone for an error without a message."""
    line = first_line(error)
    return f"{type(error).__name__}: {line}" if line != type(error).__name__ else line
