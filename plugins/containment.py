"""An error of the callback's own (a bug, not a tracking failure, which the sender handles) never
stops training: it is logged once, and tracking ends for this fit with the run saying why."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from functools import wraps

from plugins import tags as tag_names
from plugins.run_binding import RunBinding

# The callback's own logger: its errors are filtered and read under the callback's name.
log = logging.getLogger("plugins.mlflow_callback")


def never_raises(hook):
    """A Keras hook of the callback, or end(): an error raised in it is logged once and ends tracking
    for this fit (``self._stop_tracking``); training goes on."""

    @wraps(hook)
    def guarded(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except Exception as error:
            log.exception("MLflowCallback failed in %s; training goes on without tracking", hook.__name__)
            self._stop_tracking(f"MLflowCallback failed in {hook.__name__}: {type(error).__name__}: {error}")
            return None

    return guarded


def stop_tracking(binding: RunBinding, fit, reason: str, finish_run: Callable[..., None]) -> None:
    """After a hook raised: what was queued or gathered is still sent (``fit.stop()``), the run is
    tagged ``tracking.error``, and a run the callback started ends FAILED (``finish_run``); one its
    owner started is left to the owner."""
    binding.unwatch()
    # Already failing: nothing more to say than the error logged before.
    with suppress(Exception):
        if fit is not None:
            fit.stop()
    with suppress(Exception):
        binding.client.set_tag(binding.run_id, tag_names.TRACKING_ERROR, reason)
    with suppress(Exception):
        if binding.ends_with_fit:
            finish_run("FAILED", tags={tag_names.FAILURE_REASON: reason})


def end_unfinished(fit, end: Callable[[str], None], error: BaseException | None = None) -> None:
    """End the run of a fit that never reached on_train_end (it raised or was interrupted) with
    ``end(status)``: KILLED for an interrupt, else FAILED, tagged with ``error`` where it is known."""
    fit.tag_failure(error)
    end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
