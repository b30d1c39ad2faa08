"""Turn SIGINT, SIGTERM and SIGHUP into a clean stop of ``fit`` at the next batch boundary.

Schedulers pre-empt jobs with SIGTERM, people press Ctrl-C, and a closed terminal sends SIGHUP.
Python's default turns the first into an exception wherever the interpreter happens to be, and the
others kill the process outright.
Here the current batch finishes and ``fit`` raises TrainingInterrupted before the next one, so no
half-finished epoch is ever reported as done and the owner of the run can end it as KILLED.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import keras

from plugins.sweep_stop import SIGNALS, read_stop_file

STOP_SIGNALS = SIGNALS


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by ``fit`` for a signal; a KeyboardInterrupt, so code that keeps training going
    through errors (``except Exception``, as MLflowCallback's hooks do) lets it through."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"training interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopOnSignal(keras.callbacks.Callback):
    """Use as a context manager around ``fit`` and pass it in ``callbacks``; a second signal, or one
    after training (while callbacks finish their work), stops at once.

    ``stop_file``: a file that, once it holds a signal's number, stops training as that signal would,
    looked at once a second at most: a sweep's driver writes it when it is signalled, and a job on a
    machine or in a process the signal cannot reach (a Ray cluster's worker) stops too."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, stop_file: str | Path | None = None):
        super().__init__()
        self.signals = signals
        self.stop_file = Path(stop_file) if stop_file else None
        self.received: int | None = None
        self._training_over = False
        self._previous: dict[int, object] = {}
        self._next_look = 0.0

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        if self.received is not None or self._training_over:
            # Asked twice: do not wait for the batch. Or no batch is left (the end of training, a
            # tracker waiting for its server): stop at once.
            raise TrainingInterrupted(signum)
        self.received = signum

    def on_train_begin(self, logs=None):
        self._training_over = False

    def on_train_end(self, logs=None):
        self._training_over = True

    def _stop_if_signalled(self) -> None:
        if self.received is None and self.stop_file is not None and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + 1.0
            self.received = read_stop_file(self.stop_file)
        if self.received is not None:
            raise TrainingInterrupted(self.received)

    def on_epoch_begin(self, epoch, logs=None):
        self._stop_if_signalled()

    def on_train_batch_begin(self, batch, logs=None):
        self._stop_if_signalled()

    def on_test_batch_begin(self, batch, logs=None):
        self._stop_if_signalled()


@contextmanager
def signals_held(signals: tuple[int, ...] = STOP_SIGNALS):
    """Hold these signals while the block runs (work that must not be cut in half, such as writing a
    run's files: a second Ctrl-C soon after the first would leave them half-made), then hand the first
    that came to the handler that was in force. Keep such blocks to seconds; a wait for a server
    belongs outside, where a signal can cut it short."""
    if threading.current_thread() is not threading.main_thread():  # handlers can be set only there
        yield
        return
    came: list[int] = []
    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is not None:  # None: a handler set outside Python, which cannot be put back
            previous[signum] = signal.signal(signum, lambda number, frame: came.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if came:
            signal.raise_signal(came[0])
