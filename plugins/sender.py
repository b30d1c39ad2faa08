"""Send tracking calls on one background thread, in order, so training never waits on MLflow.

A call that fails is kept and tried again later (``retry``); the first failure warns once. Once a
call could not reach the server at all, the calls after it are kept without trying until the next
``retry``, whose oldest call tries the server again: each attempt can take minutes of MLflow's own
HTTP retries, and only one is spent per retry, however many calls are waiting.
Local work (writing a file) that fails for another reason than the disk (Keras cannot serialize
the model) would fail again: it is not kept, and the calls that need its file are skipped.
Nothing here raises into the training loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import requests
from mlflow.exceptions import MlflowException

from plugins.errors import describe

log = logging.getLogger(__name__)
Skip = Callable[[], bool] | None  # asked before a call is made: true skips it


class Sender:
    def __init__(
        self, name: str = "mlflow-sender", after_failure: Callable[[Callable[[], object]], None] | None = None
    ):
        """``after_failure(call)``: run on the sender's thread after a call failed on the store's disk
        (to remove what a failed upload left half-written there)."""
        self._after_failure = after_failure
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._unsent: list[tuple[str, Callable[[], object], bool, Skip]] = []  # (what, call, local, unless)
        self._unreachable = False  # a call got no answer from the server since the last retry
        self._warned = False
        self._not_written: dict[str, str] = {}  # local work that failed for good -> why
        self._done_elsewhere: set[str] = set()  # local work another call did: nothing to send after it
        self._refused: dict[str, str] = {}  # calls the server answered with a refusal (4xx) -> why

    def submit(
        self,
        what: str,
        call: Callable[[], object],
        local: bool = False,
        needs: str | None = None,
        unless: Skip = None,
    ) -> Future:
        """Queue ``call``; ``what`` names it in warnings and in the list of what was not sent.
        ``local``: work that needs no server (writing a file), never held back for one.
        ``needs``: the ``what`` of the local work that writes this call's file; skipped if it failed for good.
        ``unless``: asked when the call's turn comes, and again at each retry: true skips it quietly (an
        earlier call did its job another way)."""
        try:
            return self._pool.submit(self._attempt_unless_unwritten, what, call, local, needs, unless)
        except RuntimeError:  # the interpreter is exiting (atexit): no new threads, send right here
            done: Future = Future()
            done.set_result(self._attempt_unless_unwritten(what, call, local, needs, unless))
            return done

    def retry(self) -> None:
        """Queue every call that failed so far, oldest first; the oldest tries the server again."""
        with self._lock:
            failed, self._unsent = self._unsent, []
            self._unreachable = False
        for what, call, local, unless in failed:
            self.submit(what, call, local, unless=unless)

    def flush(self) -> list[str]:
        """Wait for everything queued; return what could not be sent."""
        self.submit("flush", lambda: None, local=True).result()
        with self._lock:
            return [what for what, *_ in self._unsent]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def unsent_calls(self) -> list[tuple[str, Callable[[], object]]]:
        with self._lock:
            return [(what, call) for what, call, *_ in self._unsent]

    @property
    def unreachable(self) -> bool:
        """The server gave no answer to the last call that tried it."""
        with self._lock:
            return self._unreachable

    @property
    def has_unsent(self) -> bool:
        with self._lock:
            return bool(self._unsent)

    @property
    def refused(self) -> dict[str, str]:
        """Calls the server refused (it answered: a bad value, a name it does not take), and why."""
        with self._lock:
            return dict(self._refused)

    @property
    def not_written(self) -> dict[str, str]:
        """Local work that failed for good (not retried), and why."""
        with self._lock:
            return dict(self._not_written)

    def _attempt_unless_unwritten(
        self, what: str, call: Callable[[], object], local: bool, needs: str | None, unless: Skip
    ) -> None:
        with self._lock:
            unwritten = needs in self._not_written or needs in self._done_elsewhere
        if not unwritten and not (unless is not None and unless()):
            self._attempt(what, call, local, unless)

    def _attempt(self, what: str, call: Callable[[], object], local: bool, unless: Skip) -> None:
        with self._lock:
            held = self._unreachable and not local
            if held:
                self._unsent.append((what, call, local, unless))
        if held:
            return
        try:
            call()
        except Unneeded:
            with self._lock:
                self._done_elsewhere.add(what)
        except Deferred as deferred:  # a later call does its job: the calls that need it wait for that one
            with self._lock:
                self._not_written[what] = str(deferred)
        except Exception as error:
            if local and not isinstance(error, OSError):  # not the disk: writing again would fail again
                self.give_up(what, error)
            elif not local and server_refused(error):  # it answered no: asking again gets the same answer
                self._refuse(what, error)
            else:
                self._keep(what, call, local, unless, error)
                # A local disk that failed mid-write (a full artifact store), not a server that never
                # answered: asking it about the run would cost another round of MLflow's retries.
                wrote_part = isinstance(error, OSError) and not got_no_answer(error)
                if not local and wrote_part and self._after_failure is not None:
                    try:
                        self._after_failure(call)
                    except Exception as cleanup_error:  # never into training: the call is kept all the same
                        log.warning("MLflow tracking: after %s failed, %s", what, describe(cleanup_error))
        else:
            if local:
                with self._lock:
                    self._not_written.pop(what, None)

    def _refuse(self, what: str, error: Exception) -> None:
        reason = describe(error)
        with self._lock:
            self._refused[what] = reason
        log.error("MLflow tracking: the server refused %s (%s); not retried, not kept", what, reason)

    def give_up(self, what: str, error: Exception) -> None:
        """Local work that failed for good (also when it ran off this thread): named once, not retried."""
        reason = describe(error)
        with self._lock:
            first = what not in self._not_written
            self._not_written[what] = reason
        if first:
            log.warning(
                "MLflow tracking: %s failed (%s); not retried, training goes on without its files", what, reason
            )

    def _keep(self, what: str, call: Callable[[], object], local: bool, unless: Skip, error: Exception) -> None:
        """Any other tracking failure: keep the call for the next retry, never raise into training."""
        with self._lock:
            self._unsent.append((what, call, local, unless))
            self._unreachable = self._unreachable or (not local and got_no_answer(error))
            first = not self._warned
            self._warned = True
        if first:
            log.warning(
                "MLflow tracking failed (%s: %s); training goes on and it will be retried", what, describe(error)
            )
        else:
            log.debug("MLflow tracking failed again (%s: %s)", what, describe(error))


class Unneeded(Exception):  # noqa: N818 (not an error: a decision)
    """Raised by local work that another call has done already (the final checkpoint, when model/
    holds the same file): the calls that need it are skipped, and nothing is reported."""


class Deferred(Exception):  # noqa: N818 (not an error: a decision)
    """Raised by local work that does not run now because a later call does its job (the final
    checkpoint where no background one can be written): the calls that need it are skipped, quietly."""


def got_no_answer(error: BaseException) -> bool:
    """The request failed in transport (refused, timed out, out of retries), not a value the server refused."""
    for _ in range(10):  # MLflow wraps the requests error it caught: look down the chain
        if error is None:
            return False
        if isinstance(error, requests.exceptions.RequestException):
            return True
        error = error.__cause__ or error.__context__
    return False


def server_refused(error: BaseException) -> bool:
    """The server answered with a refusal of the request itself (HTTP 4xx but 429, or the store's own
    INVALID_PARAMETER_VALUE and the like): sending it again would get the same answer."""
    if got_no_answer(error) or not isinstance(error, MlflowException):
        return False
    status = error.get_http_status_code()
    return 400 <= status < 500 and status != 429
