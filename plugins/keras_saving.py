"""Keep what Keras learns in one model save for the next one, in any thread.

To know which attributes of a layer, optimizer or metric not to walk, a Keras save builds reference
objects of those classes and lists their attributes (7-12 ms of a save of the digits CNN). Keras
means to keep the lists, per thread, but Keras 3.15.1 stores them as ``saving_attr_skipset_*``
and looks them up as ``saving_attr_skiplist_*``, so every save builds them again; and each fit
saves on a new sender thread anyway. The lists depend only on the Keras version, so the ones found
in one save serve every later save of the process. On a Keras without this global state, nothing
is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

try:
    from keras.src.backend.common import global_state
except ImportError:  # a Keras laid out otherwise: saves just build their lists themselves
    global_state = None

_NAMES = ("saving_attr_skiplist_", "saving_attr_skipset_")  # where Keras looks them up, where it stores them

_lock = threading.Lock()
_skipsets: dict[str, set[str]] = {}  # object type ("Layer", "Optimizer", ...) -> attributes to skip


@contextmanager
def known_skipsets() -> Iterator[None]:
    """Around a save: hand Keras the lists found so far, and keep the ones it builds."""
    if global_state is None:
        yield
        return
    with _lock:
        known = dict(_skipsets)
    for obj_type, skipset in known.items():
        for name in _NAMES:
            global_state.set_global_attribute(f"{name}{obj_type}", skipset)
    yield
    found = {
        name[len(prefix) :]: value
        for name, value in vars(global_state.GLOBAL_STATE_TRACKER).items()
        for prefix in _NAMES
        if name.startswith(prefix) and isinstance(value, set)
    }
    with _lock:
        _skipsets.update(found)
