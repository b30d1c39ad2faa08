"""Where this machine keeps each run's Keras backup (BackupAndRestore's folder): a record of its own,
never a path stored in the run, which anyone who can edit the run could point at a user's folder
(Keras deletes its backup folder when training ends).

The record is a file named after the run under ``$XDG_STATE_HOME/keras-mlflow-experiments/backups``
(``~/.local/state`` without it) holding the folder's path; the folder holds the run's id too, so a
folder another run has since used is not taken for this run's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_FILE = ".run_id"  # in the backup folder: the run it belongs to
# What BackupAndRestore restores: the epoch, and the weights (without them it would restore the epoch
# alone and train on from fresh weights, in silence).
KERAS_STATE = ("training_metadata.json", "latest.weights.h5")
_RUN_ID = re.compile(r"[0-9a-zA-Z_-]{1,64}")  # a run id is a file name here: no separator, no ..


def records_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "keras-mlflow-experiments" / "backups"


def record_backup(run_id: str, backup_dir: str) -> None:
    """Remember that ``backup_dir`` holds ``run_id``'s backup; a warning, not a failure, when the
    record cannot be written (the run then resumes from its logged checkpoint)."""
    folder = Path(backup_dir).absolute()
    try:
        record = _record(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / OWNER_FILE).write_text(run_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(str(folder))
    except (OSError, ValueError) as error:
        log.warning(
            "run %s: where its backup is could not be recorded (%s); a resume starts from its checkpoint", run_id, error
        )


def forget_backup(run_id: str) -> None:
    """A run that ended normally has no backup left to resume from (Keras removed it)."""
    try:
        _record(run_id).unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def recorded_backup(run_id: str) -> tuple[str | None, str | None]:
    """(this run's backup folder, None), or (None, why there is none to resume from)."""
    try:
        record = _record(run_id)
        if not record.is_file():
            return None, "this machine holds no backup of it"
        folder = Path(record.read_text().strip())
        if not all((folder / name).is_file() for name in KERAS_STATE):
            return None, f"its backup folder {folder} holds no whole backup"
        if (folder / OWNER_FILE).read_text().strip() != run_id:
            return None, f"its backup folder {folder} holds another run's backup"
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return None, f"its backup cannot be read ({error})"
    return str(folder), None


def _record(run_id: str) -> Path:
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id[:40]!r} is not a run id")
    return records_folder() / run_id
