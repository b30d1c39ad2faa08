"""Waiting for an HTTP tracking server before anything is trained or started, and asking whether its API
answers (a server can pass its health check while its store is broken)."""

from __future__ import annotations

import re
import time

import requests
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from plugins.redaction import redact_text

API_TIMEOUT_S = 10


class ServerUnreachable(ConnectionError):
    """The tracking server gave no answer within the time allowed; the message names it (no password)."""


def wait_for_server(uri: str, wait_s: float) -> None:
    """Return once the HTTP tracking server at ``uri`` answers its health check; ServerUnreachable
    after ``wait_s``. It is asked at least once. Credentials in the URL (``http://user:pass@host``)
    are sent as HTTP basic auth, as MLflow's client sends them. A local store (sqlite:, file:, a
    path) has nothing to wait for."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + wait_s
    while True:
        reason = _health_problem(f"{uri.rstrip('/')}/health")
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise ServerUnreachable(
                f"the tracking server {redact_text(uri)} does not answer ({reason}) after {wait_s:g} s"
            )
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def _health_problem(url: str) -> str | None:
    """None when the server answers OK; else why not, in a few words."""
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException as error:
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))  # requests wraps the socket's error deep inside
        return errno[0] if errno else type(error).__name__
    return None if response.ok else f"HTTP {response.status_code} {response.reason}"


def api_problem(uri: str) -> str | None:
    """None when the HTTP tracking server at ``uri`` answers one read of its REST API (with the
    credentials MLflow's client would send) within API_TIMEOUT_S; else why not, in a few words. A
    local store has no API to ask."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/get-by-name",
            "GET",
            max_retries=0,
            timeout=API_TIMEOUT_S,
            raise_on_status=False,
            params={"experiment_name": "Default"},
        )
    except Exception as error:  # a timeout, a dropped connection
        return f"no answer in {API_TIMEOUT_S} s" if "timed out" in str(error).lower() else type(error).__name__
    if response.ok or response.status_code == 404:  # 404: no such experiment, which is an answer
        return None
    return f"HTTP {response.status_code} {response.reason}"


def permission_problem(uri: str, experiment_id: str | None) -> str | None:
    """Why the user MLflow's client signs in as (MLFLOW_TRACKING_USERNAME) may not start runs in the
    experiment, asked of a server that runs MLflow's basic-auth app; None where it may, where the
    experiment is still to be made (its maker manages it), where no user is given, or where the
    server has no such app (the question is then a 404)."""
    credentials = get_default_host_creds(uri)
    if experiment_id is None or not uri.startswith(("http://", "https://")) or not credentials.username:
        return None
    try:
        response = http_request(
            credentials,
            "/api/3.0/mlflow/users/permissions/get",
            "GET",
            max_retries=0,
            timeout=API_TIMEOUT_S,
            raise_on_status=False,
            params={"username": credentials.username, "resource_type": "experiment", "resource_id": experiment_id},
        )
        permission = response.json().get("permission") if response.ok else None
    except Exception:  # no answer, or no JSON: starting the run will say what is wrong
        return None
    if permission is None or permission in ("EDIT", "MANAGE"):
        return None
    return f"user {credentials.username} has {permission} on experiment {experiment_id}; a run needs EDIT"
