"""Send what training could not send to its tracking server (kept by MLflowCallback on disk).

    python -m experiments.sync [FOLDER ...] [--tracking-uri URI]

``python -m plugins.sync`` (plugins/sync.py) with the runner's store as the default: conf's
``mlflow.tracking_uri``, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
"""

from __future__ import annotations

from experiments.cli import TRACKING_URI_HELP, open_tracking_store
from plugins import sync


def main(argv: list[str] | None = None) -> int:
    return sync.main(
        argv, prog="python -m experiments.sync", open_store=open_tracking_store, uri_help=TRACKING_URI_HELP
    )


if __name__ == "__main__":
    raise SystemExit(main())
