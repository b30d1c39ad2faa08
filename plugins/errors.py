"""How an error is shown in one line: in logs, tags and the command line's error lines (with no
URL's password: errors of HTTP clients name the URL they tried)."""

from __future__ import annotations

import re

from plugins.redaction import redact_text

SENTENCE_CHARS = 400


def first_line(error: BaseException) -> str:
    """The first sentence of an error's message, on one line, or its type's name when the message is
    empty. Library errors run to many lines, some start with a newline, and some wrap their first
    sentence (Keras: "Object GAN was created by passing / non-serializable argument values ..."): a
    line at the same indent that goes on in lower case is joined to it; details such as SQLAlchemy's
    "[SQL: ...]" or OmegaConf's indented "full_key: ..." are not."""
    lines = str(error).splitlines()
    start = next((number for number, line in enumerate(lines) if line.strip()), None)
    if start is None:
        return type(error).__name__
    indent = _indent(lines[start])
    sentence = lines[start].strip()
    for line in lines[start + 1 :]:
        text = line.strip()
        if not text or _indent(line) != indent or not (text[0].islower() or text[0] == "`") or _FIELD.match(text):
            break
        sentence += " " + text
    if len(sentence) > SENTENCE_CHARS:
        sentence = sentence[: SENTENCE_CHARS - 3] + "..."
    return redact_text(sentence)


_FIELD = re.compile(r"^\w+\s*[:=]")  # "full_key: ...", "object_type=dict": a detail, not prose


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def describe(error: BaseException) -> str:
    """``Type: first line``, or the type's name alone for an error without a message."""
    line = first_line(error)
    return f"{type(error).__name__}: {line}" if line != type(error).__name__ else line
