"""A sweep's progress while it runs: how many jobs it will run, and as each job ends, the parent's
``jobs_finished`` and ``jobs_failed`` (step = jobs ended so far), its description ("k of n jobs
done") and the console's "job k of n" with the time so far and an estimate of the time left."""

from __future__ import annotations

import logging
import time

import mlflow
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.entities import Metric, RunTag
from omegaconf import DictConfig

from plugins import tags as tag_names

log = logging.getLogger(__name__)


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch: the product of the swept values for Hydra's basic
    sweeper, ``n_trials`` for a search; None where the sweeper does not say (a glob of groups)."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if not str(sweeper.get("_target_", "")).endswith(BasicSweeper.__name__):
        return None
    params = sweeper.get("params") or {}
    typed = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(typed)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # a sweep this parser cannot count without the config loader (glob): no total
        return None


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``1h02m``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_text(ended: int, failed: int, planned: int | None, elapsed_s: float) -> str:
    """``job 3 of 12 done (1 failed): 2m10s so far, about 6m30s left``: the time left at the rate so
    far, which counts jobs running side by side."""
    of = f" of {planned}" if planned else ""
    failures = f" ({failed} failed)" if failed else ""
    left = ""
    if planned and 0 < ended < planned:
        left = f", about {duration(elapsed_s / ended * (planned - ended))} left"
    return f"job {ended}{of} done{failures}: {duration(elapsed_s)} so far{left}"


def waiting_note(ended: int, failed: int, planned: int | None) -> str:
    """The parent's description while the sweep runs; the study's answer replaces it at the end."""
    of = f" of {planned}" if planned else ""
    failures = f", {failed} failed" if failed else ""
    return f"{ended}{of} jobs done{failures}. The study's answer replaces this when the sweep ends."


def ended_children(client: mlflow.MlflowClient, parent_run_id: str) -> tuple[int, int]:
    """(children ended, of them not FINISHED), from the store, which every job's process shares."""
    parent = client.get_run(parent_run_id)
    query = f"tags.{tag_names.PARENT_RUN} = '{parent_run_id}'"
    children = client.search_runs([parent.info.experiment_id], query, max_results=10000)
    ended = [child for child in children if child.info.status not in ("RUNNING", "SCHEDULED")]
    return len(ended), sum(child.info.status != "FINISHED" for child in ended)


def record_job_end(client: mlflow.MlflowClient, parent_run_id: str, planned: int | None) -> str:
    """Log the sweep's progress on its parent as a job ends; returns the console's line."""
    ended, failed = ended_children(client, parent_run_id)
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id,
        metrics=[Metric("jobs_finished", ended - failed, now, ended), Metric("jobs_failed", failed, now, ended)],
        tags=[RunTag(tag_names.NOTE, waiting_note(ended, failed, planned))],
    )
    started = client.get_run(parent_run_id).info.start_time
    return progress_text(ended, failed, planned, (now - started) / 1000)
