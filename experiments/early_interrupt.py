"""Ctrl-C while the runner starts up (its imports take seconds): one line on stderr, no traceback,
and nothing trained.

Importing this module (the entry points do it before anything heavy) sets two things:
``sys.excepthook`` prints a KeyboardInterrupt nobody caught as one line (Python then ends the
process as killed by SIGINT: the shell's 130), and SIGINT's handler notes the signal before it
raises as Python's does, because Python drops a KeyboardInterrupt that lands in a finaliser
(a garbage-collected object's callback): ``came()`` still tells.
"""

from __future__ import annotations

import signal
import sys
import threading

_came: list[int] = []


def came() -> bool:
    """Whether Ctrl-C came since this module was imported, even where its KeyboardInterrupt was lost."""
    return bool(_came)


def _note_and_raise(signum, frame) -> None:
    _came.append(signum)
    raise KeyboardInterrupt


def _one_line_for_ctrl_c(kind, error, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print(f"error: {str(error) or 'interrupted'} (Ctrl-C)", file=sys.stderr)
        return
    sys.__excepthook__(kind, error, traceback)


sys.excepthook = _one_line_for_ctrl_c
in_main_thread = threading.current_thread() is threading.main_thread()  # handlers can be set only there
if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _note_and_raise)
