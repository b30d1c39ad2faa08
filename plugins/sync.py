"""Send what training could not send to its tracking server (kept by MLflowCallback on disk).

    python -m plugins.sync [FOLDER ...] [--tracking-uri URI]

Without folders it looks for every `unsent/<run id>` folder under mlflow-unsent/ (the callback's
own, without output_dir), outputs/ and multirun/ (the runner's Hydra folders). The store
is the one the command is given (else MLflow's own: MLFLOW_TRACKING_URI), never one a folder names.
Exits 0 when everything was sent, 1 when something is still unsent (run it again later) or a line
was refused: only the calls the callback keeps, for the folder's own run, are ever made; 2 when a
folder holds nothing to send or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow

from plugins import spool
from plugins.errors import first_line
from plugins.redaction import redact_text
from plugins.settings import UNSENT_FOLDER

# The callback's own folder (no output_dir), then the runner's Hydra folders.
SEARCHED = (Path(UNSENT_FOLDER), Path("outputs"), Path("multirun"))


def main(
    argv: list[str] | None = None,
    prog: str = "python -m plugins.sync",
    open_store: Callable[[str | None], mlflow.MlflowClient] | None = None,
    uri_help: str = "default: MLFLOW_TRACKING_URI, else MLflow's default",
) -> int:
    """The command; ``open_store(uri)`` opens the store (raising an error whose text is one line)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        help=f"unsent/<run id> folders (default: found under {', '.join(map(str, SEARCHED))})",
    )
    parser.add_argument("--tracking-uri", default=None, help=uri_help)
    args = parser.parse_args(argv)
    folders = args.folders or unsent_folders(SEARCHED)
    missing = [folder for folder in folders if not (folder / spool.SPOOL_FILE).is_file()]
    if missing:
        print(f"error: {missing[0]} holds nothing to send (no {spool.SPOOL_FILE})", file=sys.stderr)
        return 2
    try:
        client = (open_store or _open_store)(args.tracking_uri)
    except Exception as error:  # the opener's one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not folders:
        print("nothing to send")
        return 0
    return 1 if sum(send_folder(folder, client) for folder in folders) else 0


def unsent_folders(roots: tuple[Path, ...]) -> list[Path]:
    """Every ``unsent/<run id>`` folder with something to send under ``roots``."""
    return [path.parent for root in roots if root.is_dir() for path in root.rglob(f"unsent/*/{spool.SPOOL_FILE}")]


def send_folder(folder: Path, client: mlflow.MlflowClient) -> int:
    """Send one folder's calls and say what happened in one line; the number not done (unsent or refused)."""
    try:
        replay = spool.send(folder, client)
    except OSError as error:  # its disk, not the server: what was sent is off the spool already
        print(f"error: {folder}: {error.strerror or error} ({error.filename or folder})", file=sys.stderr)
        return 1
    refused = f", {replay.refused} refused (kept in {folder / spool.REFUSED_FILE})" if replay.refused else ""
    print(f"{folder}: sent {replay.sent}, {replay.unsent} still unsent{refused}")
    return replay.unsent + replay.refused


def _open_store(uri: str | None) -> mlflow.MlflowClient:
    try:
        return mlflow.MlflowClient(uri)
    except Exception as error:  # SQLAlchemy, sqlite3, an unknown scheme: all mean the same to the user
        where = uri or mlflow.get_tracking_uri()
        raise RuntimeError(redact_text(f"cannot open the tracking store {where}: {first_line(error)}")) from None


if __name__ == "__main__":
    raise SystemExit(main())
