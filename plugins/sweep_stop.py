"""A signal to a sweep stops the whole sweep, whichever launcher runs its jobs.

The sweep's driver process catches SIGINT, SIGTERM and SIGHUP, writes a stop file in the sweep's
folder and passes the signal on to every process it started (joblib's workers, a Ray it started):
each job stops after its current batch and ends its run KILLED (plugins.interrupt.StopOnSignal),
a running job the signal cannot reach (on a Ray cluster) sees the stop file within a second and
does the same, and a job that had not begun reads the stop file and never starts. When the jobs
are done, the driver ends the sweep's parent KILLED and exits 128 + the signal's number, as the
shell expects.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

STOP_FILE_ENV = "SWEEP_STOP_FILE"  # where a sweep's jobs look for the stop file
DRIVER_PID_ENV = "SWEEP_DRIVER_PID"  # the process that runs the sweep (and, with the basic launcher, its jobs)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SweepStop:
    """In the sweep's driver: the signal handlers, and what a signal leaves behind."""

    def __init__(self, sweep_dir: Path):
        self.stop_file = sweep_dir / ".stopped"
        self.driver_pid = os.getpid()
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        self.stop_file.unlink(missing_ok=True)
        os.environ[STOP_FILE_ENV] = str(self.stop_file)
        os.environ[DRIVER_PID_ENV] = str(self.driver_pid)
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}

    def environment(self) -> dict[str, str]:
        """What a job's process needs to see the stop and to know it is not the driver: for a process
        that did not inherit the driver's environment (a Ray worker)."""
        return {STOP_FILE_ENV: str(self.stop_file), DRIVER_PID_ENV: str(self.driver_pid)}

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        os.environ.pop(STOP_FILE_ENV, None)
        os.environ.pop(DRIVER_PID_ENV, None)

    @property
    def signal_received(self) -> int | None:
        """The signal that stopped the sweep (caught here, or by a job in this process), if any."""
        return read_stop_file(self.stop_file)

    def _on_signal(self, signum: int, frame) -> None:
        if self.signal_received is None:
            request_stop(signum, self.stop_file)
            log.warning(
                "%s: stopping the sweep; each running job ends after its current batch", signal.Signals(signum).name
            )
        # Again for a second signal: the jobs' own handlers then stop at once.
        for worker in psutil.Process().children(recursive=True):
            try:
                worker.send_signal(signum)
            except psutil.Error:  # it ended meanwhile
                pass

    def exit_if_stopped(self) -> None:
        """After the parent run is ended: leave with the shell's code for the signal, whatever Hydra
        made of the jobs' failures. Exits at once (atexit handlers after this one are not run), so
        output is flushed first."""
        signum = self.signal_received
        if signum is None:
            return
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)


def request_stop(signum: int, stop_file: Path | None = None) -> None:
    """Stop the sweep this process belongs to (a job that received the signal itself, or the driver)."""
    path = stop_file or (Path(os.environ[STOP_FILE_ENV]) if STOP_FILE_ENV in os.environ else None)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(signum))
        except OSError as error:
            log.warning("could not write the sweep's stop file %s: %s", path, error)


def stop_requested() -> int | None:
    """In a job of a sweep: the signal that stopped the sweep before this job began, if any."""
    path = os.environ.get(STOP_FILE_ENV)
    return read_stop_file(Path(path)) if path else None


def read_stop_file(path: Path) -> int | None:
    """The signal a stop file names, or None: no file, or one that names none of SIGNALS (anyone who
    can write the sweep's folder could write ``999``, which no exit code or signal name fits)."""
    try:
        with path.open(errors="replace") as file:
            number = int(file.read(16).strip())
    except (OSError, ValueError):
        return None
    return number if number in SIGNALS else None


def in_driver() -> bool:
    """Whether this process is the sweep's driver (a basic-launcher job runs there) or no sweep's at all."""
    return os.environ.get(DRIVER_PID_ENV, str(os.getpid())) == str(os.getpid())
