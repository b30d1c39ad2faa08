"""Where a run opens in the MLflow UI, said the same way by the runner, the sweep and compare."""

from __future__ import annotations

import re

from plugins.redaction import redact_text

# The README's command: without MLflow 3's GenAI job runner, with one web worker.
UI_COMMAND = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {store} --workers 1"


def without_credentials(url: str) -> str:
    """http://user:pass@host -> http://host: a link to click, with nothing secret in it."""
    return re.sub(r"^(\w[\w+.-]*://)[^/@]*@", r"\1", url)


def run_page(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page: on the tracking server, or `mlflow ui`'s for a local store, in MLflow 3's
    model-training view (without workflowType it opens in its GenAI view)."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{without_credentials(tracking_uri).rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page}"


def ui_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """``see it at URL``, and for a local store the command that serves it first."""
    page = run_page(tracking_uri, experiment_id, run_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"see it at {page}"
    return f"see it with `{UI_COMMAND.format(store=redact_text(tracking_uri))}` at {page}"
