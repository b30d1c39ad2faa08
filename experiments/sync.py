"""Send what training could not send to its tracking server (kept by MLflowCallback on disk).

    python -m experiments.sync [FOLDER ...] [--tracking-uri URI]

Without folders it looks for every `unsent/<run id>` folder under outputs/ and multirun/.
Exits 0 when everything was sent, 1 when something is still unsent (run it again later) or a line
was refused: only the calls the callback keeps, for the folder's own run, are ever made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.cli import TRACKING_URI_HELP, TrackingStoreError, open_tracking_store
from plugins import spool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sync", description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", nargs="*", type=Path, help="unsent/<run id> folders (default: found under outputs/, multirun/)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=TRACKING_URI_HELP,
    )
    args = parser.parse_args(argv)
    folders = args.folders or [
        path.parent
        for root in (Path("outputs"), Path("multirun"))
        if root.is_dir()
        for path in root.rglob(f"unsent/*/{spool.SPOOL_FILE}")
    ]
    missing = [folder for folder in folders if not (folder / spool.SPOOL_FILE).is_file()]
    if missing:
        print(f"error: {missing[0]} holds nothing to send (no {spool.SPOOL_FILE})", file=sys.stderr)
        return 2
    try:
        client = open_tracking_store(args.tracking_uri)
    except TrackingStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    not_done = 0
    for folder in folders:
        try:
            replay = spool.send(folder, client)
        except OSError as error:  # its disk, not the server: what was sent is off the spool already
            print(f"error: {folder}: {error.strerror or error} ({error.filename or folder})", file=sys.stderr)
            not_done += 1
            continue
        not_done += replay.unsent + replay.refused
        refused = f", {replay.refused} refused (kept in {folder / spool.REFUSED_FILE})" if replay.refused else ""
        print(f"{folder}: sent {replay.sent}, {replay.unsent} still unsent{refused}")
    if not folders:
        print("nothing to send")
    return 1 if not_done else 0


if __name__ == "__main__":
    raise SystemExit(main())
