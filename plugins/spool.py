"""What the tracking server never took, kept on disk and sent later (``python -m experiments.sync``).

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

import mlflow
from mlflow.entities import Metric, Param, RunTag

from plugins.errors import first_line

log = logging.getLogger(__name__)

SPOOL_FILE = "unsent.jsonl"
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


def send(folder: Path, client: mlflow.MlflowClient) -> tuple[int, int]:
    """Replay folder/unsent.jsonl in order; keep what fails again. Returns (sent, still unsent)."""
    path = folder / SPOOL_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    left = []
    for record in records:
        try:
            getattr(client, record["method"])(*record["args"], **_decode_keywords(record["keywords"]))
        except Exception as error:  # still unreachable, or rejected: keep it
            log.warning("not sent (%s): %s", record["what"], first_line(error))
            left.append(record)
    path.write_text("".join(json.dumps(record) + "\n" for record in left))
    if not left:
        path.unlink()
        shutil.rmtree(folder / "files", ignore_errors=True)
    return len(records) - len(left), len(left)


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


def _decode_keywords(keywords: dict) -> dict:
    return {
        name: [_ENTITIES[name].from_dictionary(entity) for entity in value] if name in _ENTITIES else value
        for name, value in keywords.items()
    }
