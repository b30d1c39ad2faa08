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
from omegaconf import DictConfig, OmegaConf

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
    # As typed: read as a whole, not item by item, which would resolve a ${...} against the sweep's config.
    params = sweeper.get("params")
    params = OmegaConf.to_container(params) if params is not None else {}
    typed = [f"{key}={value}" for key, value in params.items()] + OmegaConf.to_container(config.hydra.overrides.task)
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


JOB_ENDED = "internal.sweep.job."  # + the job's number: finished or failed, set by the job's own process


def record_job_end(client: mlflow.MlflowClient, parent_run_id: str, planned: int | None, job: int, failed: bool) -> str:
    """Log the sweep's progress on its parent as job number ``job`` ends; returns the console's line.
    Each job marks its own end on the parent (a tag of its own: no two processes write one key), so
    a job that failed before its run began counts too."""
    client.set_tag(parent_run_id, f"{JOB_ENDED}{job}", "failed" if failed else "finished")
    parent = client.get_run(parent_run_id)
    marks = [value for key, value in parent.data.tags.items() if key.startswith(JOB_ENDED)]
    ended, failures = len(marks), marks.count("failed")
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id,
        metrics=[Metric("jobs_finished", ended - failures, now, ended), Metric("jobs_failed", failures, now, ended)],
        tags=[RunTag(tag_names.NOTE, waiting_note(ended, failures, planned))],
    )
    return progress_text(ended, failures, planned, (now - parent.info.start_time) / 1000)
