"""Delivery of a fit's tracking calls: the sender thread, retries until a deadline, and the spool
of what the server never took."""

from __future__ import annotations

import logging
import shutil
import time
from functools import partial
from pathlib import Path

from mlflow.utils.file_utils import local_file_uri_to_path as local_artifact_path

from plugins import spool
from plugins.errors import describe
from plugins.sender import Sender

log = logging.getLogger(__name__)


class Delivery:
    """One Sender for one fit's calls, with what happens when the server does not take them.

    Args:
        run_id: the run the calls are for (named in messages).
        spool_base: what is never sent goes to ``spool_base/unsent/<run id>/``.
    """

    def __init__(self, run_id: str, spool_base: Path):
        self.run_id = run_id
        self.sender = Sender(after_failure=remove_partial_upload)
        self._spool_base = spool_base
        self.unsent_folder: Path | None = None

    def submit(self, what: str, call, local: bool = False, needs: str | None = None, unless=None) -> None:
        self.sender.submit(what, call, local=local, needs=needs, unless=unless)

    def retry_if_unsent(self) -> None:
        if self.sender.has_unsent:
            self.sender.retry()

    @property
    def unreachable(self) -> bool:
        return self.sender.unreachable

    def flush_with_retries(self, timeout_s: float) -> tuple[list[str], KeyboardInterrupt | None]:
        """Wait for everything queued; retry what failed until it is sent or ``timeout_s`` passes.
        An interrupt (Ctrl-C) cuts the wait short: it is handed back, to be raised once what was not
        sent is kept on disk and the run is ended."""
        deadline = time.monotonic() + timeout_s
        try:
            unsent = self.sender.flush()
            if unsent and timeout_s > 0:
                log.warning(
                    "MLflow run %s: the tracking server has not taken %s; trying again for up to %g s "
                    "(flush_timeout_s). Ctrl-C stops waiting and keeps them on disk",
                    self.run_id,
                    ", ".join(unsent),
                    timeout_s,
                )
            while unsent and time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                self.sender.retry()
                unsent = self.sender.flush()
            return unsent, None
        except KeyboardInterrupt as interrupt:
            log.warning("MLflow run %s: stopped waiting for the tracking server (%s)", self.run_id, describe(interrupt))
            return self.sender.flush(), interrupt

    def close(self, keep_unsent: bool) -> None:
        """Report the files that were never written, stop the thread, keep what was not sent on disk."""
        for what, reason in self.sender.not_written.items():
            log.error("MLflow run %s: %s failed (%s), so its files are not in the run", self.run_id, what, reason)
        self.sender.close()
        if keep_unsent:
            self.unsent_folder = keep_unsent_calls(self.sender.unsent_calls(), self.run_id, self._spool_base)


def keep_unsent_calls(calls: list, run_id: str, spool_base: Path) -> Path | None:
    """``calls`` on disk in ``spool_base/unsent/<run id>/``, for ``python -m plugins.sync``; None
    where that disk cannot take them either (said once in the log, with what is lost)."""
    try:
        folder = spool.keep(calls, spool_base / "unsent" / run_id)
    except OSError as error:
        log.error(
            "MLflow run %s: %s could not be stored nor kept on disk (%s); they are lost",
            run_id,
            ", ".join(what for what, _ in calls),
            describe(error),
        )
        return None
    log.error(
        "MLflow run %s: the tracking server did not take %s; kept in %s, send with: python -m plugins.sync %s",
        run_id,
        ", ".join(what for what, _ in calls),
        folder,
        folder,
    )
    return folder


def remove_partial_upload(call) -> None:
    """After an upload to a local artifact store failed (a full disk), remove what it left there:
    a run's files are whole or absent, and plugins.sync uploads them again whole."""
    if not isinstance(call, partial) or getattr(call.func, "__name__", "") not in ("log_artifact", "log_artifacts"):
        return
    client, (run_id, local_path, *folder) = call.func.__self__, call.args
    root = client.get_run(run_id).info.artifact_uri
    if not root.startswith(("file:", "/")):
        return  # a server or cloud store writes whole objects, or nothing
    target = Path(local_artifact_path(root))
    if folder and folder[0]:
        target = target / folder[0]
    if call.func.__name__ == "log_artifact":
        target = target / Path(local_path).name
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)
    log.info("removed %s, which a failed upload left half-written", target)
