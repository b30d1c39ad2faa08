"""What the tracking server never took, kept on disk and sent later (``python -m plugins.sync``).

Only plain MlflowClient calls are kept (log_batch, log_artifact, log_artifacts, set_terminated):
one JSON line each in ``unsent.jsonl``, with a copy of every file they upload beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import mlflow
from mlflow.entities import Metric, Param, RunTag

from plugins import tags as tag_names
from plugins.errors import first_line

log = logging.getLogger(__name__)

SPOOL_FILE = "unsent.jsonl"
REFUSED_FILE = "refused.jsonl"
_ENTITIES = {"metrics": Metric, "params": Param, "tags": RunTag}


def keep(calls: list[tuple[str, Callable[[], object]]], folder: Path) -> Path:
    """Append the calls that can be replayed to folder/unsent.jsonl; log the ones that cannot."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / SPOOL_FILE, "a") as spool:
        for number, (what, call) in enumerate(calls):
            try:
                record = _encode(call, folder / "files" / f"{number:05d}")
            except FileNotFoundError as error:  # an upload whose file was never written (a full disk)
                log.error("cannot keep %r for later: its file %s is not there", what, error.filename)
                continue
            if record is None:
                log.error("cannot keep %r for later: it is not a plain MlflowClient call", what)
                continue
            spool.write(json.dumps({"what": what, **record}) + "\n")
    return folder


class Replay(NamedTuple):
    sent: int  # records the server took
    unsent: int  # records it did not take yet: kept for the next sync
    refused: int  # torn or crafted lines, never called: moved to refused.jsonl


def send(folder: Path, client: mlflow.MlflowClient) -> Replay:
    """Replay folder/unsent.jsonl in order; keep what fails again. A line is data, never code: only
    the calls keep() writes are made, with checked arguments, for the run the folder is named after;
    a torn line (a crash mid-write) or any other is refused, named in the log, and the rest still sent."""
    path = folder / SPOOL_FILE
    left, refused, sent = [], [], 0
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            method, args, keywords = checked_call(line, folder)
        except SpoolRecordError as error:
            log.error("%s line %d refused, not sent: %s", path, number, error)
            refused.append(line)
            continue
        try:
            getattr(client, method)(*args, **keywords)
            sent += 1
        except Exception as error:  # still unreachable, or rejected: keep it
            log.warning("not sent (%s): %s", json.loads(line).get("what", method), first_line(error))
            left.append(line)
        else:
            if method == "set_terminated" and args[1] == "FINISHED":
                _clear_missing_files(client, folder.name)
    still_here = left + _moved_aside(folder, refused)
    _rewrite_in_place(path, still_here)  # before anything else: what was sent is never sent again
    if not still_here:
        path.unlink()
        shutil.rmtree(folder / "files", ignore_errors=True)
    return Replay(sent, len(left), len(refused))


def _moved_aside(folder: Path, refused: list[str]) -> list[str]:
    """Append the refused lines to refused.jsonl; those that cannot be (a full disk) stay in the spool,
    where the next sync refuses them again without calling anything."""
    if not refused:
        return []
    try:
        with open(folder / REFUSED_FILE, "a") as kept:
            kept.write("".join(f"{line}\n" for line in refused))
    except OSError as error:
        log.error("%s: the refused lines stay in %s (%s)", folder / REFUSED_FILE, SPOOL_FILE, error.strerror or error)
        return refused
    return []


def _rewrite_in_place(path: Path, lines: list[str]) -> None:
    """The spool's remaining lines, written over its own bytes: they are a part of what it held, so
    this needs no new room on a full disk (a new file, or a write after truncating, could)."""
    text = "".join(f"{line}\n" for line in lines).encode()
    with open(path, "r+b") as spool:
        spool.write(text)
        spool.truncate()


def _clear_missing_files(client: mlflow.MlflowClient, run_id: str) -> None:
    """A run that ended FAILED because files did not land, now whole and FINISHED: the tags that said
    what was missing go."""
    try:
        held = client.get_run(run_id).data.tags
        for name in (tag_names.MISSING_FILES, tag_names.FAILURE_REASON):
            if name in held:
                client.delete_tag(run_id, name)
    except Exception as error:
        log.warning("run %s is FINISHED but still tagged with what was missing: %s", run_id, first_line(error))


class SpoolRecordError(ValueError):
    """A line of unsent.jsonl that is not a call keep() writes; the message says what is wrong."""


def checked_call(line: str, folder: Path) -> tuple[str, list, dict]:
    """(method, args, keywords) of one record, each part checked against what keep() writes."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise SpoolRecordError("not a JSON record (a write cut short?)") from None
    if not isinstance(record, dict) or not isinstance(record.get("args"), list):
        raise SpoolRecordError("not a record of a call")
    method, args, keywords = record.get("method"), record["args"], record.get("keywords") or {}
    if method not in _ARGUMENTS:
        raise SpoolRecordError(f"{str(method)[:60]!r} is not a call this project keeps")
    arguments = _ARGUMENTS[method]
    fewest = len(arguments) - (method in _OPTIONAL_LAST)
    if not fewest <= len(args) <= len(arguments) or not isinstance(keywords, dict) or set(keywords) - set(_ENTITIES):
        raise SpoolRecordError(f"{method} with arguments it never has")
    if args[0] != folder.name:
        raise SpoolRecordError(f"{method} for run {str(args[0])[:40]!r}, not this folder's run {folder.name}")
    for check, value in zip(_ARGUMENTS[method][1:], args[1:]):
        check(value, folder)
    try:
        decoded = {
            name: [_ENTITIES[name].from_dictionary(entity) for entity in value] for name, value in keywords.items()
        }
    except Exception:
        raise SpoolRecordError(f"{method} with metrics, params or tags that are not MLflow's") from None
    return method, args, decoded


def _text(value, folder: Path) -> None:
    if not isinstance(value, str):
        raise SpoolRecordError(f"{value!r:.60} is not text")


def _artifact_folder(value, folder: Path) -> None:
    if value is not None and (not isinstance(value, str) or ".." in Path(value).parts or Path(value).is_absolute()):
        raise SpoolRecordError(f"artifact folder {value!r:.60} is not a folder inside the run")


def _kept_file(value, folder: Path) -> None:
    """An upload's file must be one keep() copied into the folder, not anything else on this machine:
    no link leads out of it (keep() copies files, it never links them)."""
    files = (folder / "files").resolve()
    if not isinstance(value, str) or not Path(value).resolve().is_relative_to(files):
        raise SpoolRecordError(f"uploads {str(value)[:80]!r}, which is not a file kept in {files}")
    kept = Path(value)
    links = [kept, folder / "files", *(kept.rglob("*") if kept.is_dir() and not kept.is_symlink() else [])]
    link = next((path for path in links if path.is_symlink()), None)
    if link is not None:
        raise SpoolRecordError(f"uploads {str(value)[:80]!r}, which holds a link ({link.name}) out of {files}")


def _status(value, folder: Path) -> None:
    if value not in ("FINISHED", "FAILED", "KILLED"):
        raise SpoolRecordError(f"ends the run with status {value!r:.40}")


# The calls keep() writes: each argument after the run id, and how it is checked.
_ARGUMENTS = {
    "log_batch": ("run_id",),
    "log_artifact": ("run_id", _kept_file, _artifact_folder),
    "log_artifacts": ("run_id", _kept_file, _artifact_folder),
    "set_terminated": ("run_id", _status),
    "set_tag": ("run_id", _text, _text),
}
_OPTIONAL_LAST = {"log_artifact", "log_artifacts"}  # the artifact folder: none for the run's top level


def _encode(call: Callable[[], object], files: Path) -> dict | None:
    if not isinstance(call, partial) or not isinstance(getattr(call.func, "__self__", None), mlflow.MlflowClient):
        return None
    method, args = call.func.__name__, list(call.args)
    if method in ("log_artifact", "log_artifacts"):
        # (run_id, local path, artifact path): keep a copy, the original may be a temporary file
        source, copy = Path(args[1]), files / Path(args[1]).name
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
        args[1] = str(copy)
    keywords = {
        name: [_as_dict(entity) for entity in value] if name in _ENTITIES else value
        for name, value in call.keywords.items()
    }
    return {"method": method, "args": args, "keywords": keywords}


def _as_dict(entity) -> dict:
    return entity.to_dictionary() if isinstance(entity, Metric) else {"key": entity.key, "value": entity.value}
