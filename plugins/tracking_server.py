"""Waiting for an HTTP tracking server before anything is trained or started."""

from __future__ import annotations

import time
import urllib.request


class ServerUnreachable(ConnectionError):
    """The tracking server gave no answer within the time allowed; the message names it."""


def wait_for_server(uri: str, wait_s: float) -> None:
    """Return once the HTTP tracking server at ``uri`` answers; ServerUnreachable after ``wait_s``.
    It is asked at least once. A local store (sqlite:, file:, a path) has nothing to wait for."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5)
            return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ServerUnreachable(
                    f"the tracking server {uri} does not answer ({getattr(error, 'reason', error)}) after {wait_s:g} s"
                ) from None
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
