"""A Hydra callback that turns a multirun sweep into one MLflow parent run with a child run per job.

Enable it in the Hydra config (``hydra.callbacks``). It works with any launcher: Hydra hands each
job's process (a joblib or Ray worker, a SLURM task) a copy of this callback, whose ``on_job_start``
puts the parent run id (``SWEEP_PARENT_ENV``) and the store the driver resolved into the job's
environment; each job tags its own run with the parent (``sweep_tags``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import psutil
import yaml
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from plugins import tags as tag_names
from plugins.errors import describe
from plugins.provenance import git_state
from plugins.redaction import install_log_redaction, redact_mapping, redact_override, redact_tree
from plugins.sweep_progress import planned_jobs, record_job_end, waiting_note
from plugins.sweep_stop import SweepStop
from plugins.ui_link import ui_link

log = logging.getLogger(__name__)

SWEEP_PARENT_ENV = "SWEEP_PARENT_RUN_ID"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Launchers whose jobs run in processes that do not inherit the driver's environment (Ray's workers)
# and that hand each job over in memory: the credentials travel with the jobs there. (Ray's own
# runtime environment would do it, but its agent writes the values into its log; submitit's jobs
# inherit the environment, and it pickles each job into a file.)
CARRIES_CREDENTIALS = (".RayLauncher",)


def sweep_tags(job_number: int | None = None) -> dict[str, str]:
    """Tags a job's run needs to appear under the sweep's parent run (empty outside a sweep)."""
    parent = os.environ.get(SWEEP_PARENT_ENV)
    if not parent:
        return {}
    # Set as a tag, not start_run(parent_run_id=...): MLFLOW_RUN_ID would override that (mlflow#15713).
    run_tags = {tag_names.PARENT_RUN: parent}
    if job_number is not None:
        run_tags[tag_names.SWEEP_JOB] = str(job_number)
    return run_tags


def credentials_for_jobs(launcher: str) -> dict[str, str]:
    """The store's credentials from this environment, for the jobs of a launcher that carries them."""
    if not launcher.endswith(CARRIES_CREDENTIALS):
        return {}
    return {name: os.environ[name] for name in CREDENTIALS if os.environ.get(name)}


def store_for_jobs(uri: str) -> str | None:
    """``uri`` as a job in another working folder must read it: a relative SQLite file or local
    folder made absolute; a server's address as it is. None for an address with a password in it,
    which must not travel in the jobs' files (submitit writes them to disk)."""
    if urlparse(uri).password:
        return None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())
    if "://" not in uri:  # a local folder (file store)
        return str(Path(uri).absolute())
    return uri


def source_tags() -> dict[str, str]:
    """Who started the sweep, from which program and code: the tags MLflow gives a run started the
    usual way (user, source, its git commit), and the project's git.commit and git.dirty, as on the jobs."""
    main = sys.modules.get("__main__")
    program = Path(getattr(main, "__file__", None) or Path.cwd())
    commit, dirty = git_state(program.parent if program.is_file() else program)
    return {
        **resolve_tags(),
        tag_names.GIT_COMMIT: commit or "unknown",
        tag_names.GIT_DIRTY: "unknown" if dirty is None else str(dirty).lower(),
    }


SEARCH_RESULTS = "optimization_results.yaml"  # what Hydra's Optuna sweeper writes into the sweep's folder


def record_search(client: mlflow.MlflowClient, parent: str, results: Path) -> None:
    """A search's best trial on its parent: ``search.best_params`` (a tag, ``key=value ...``),
    ``search.best_value`` (a metric) and the sweeper's results file. Read as data, checked; a secret
    searched over is redacted in all three, and in the file left in the sweep's folder."""
    if not results.is_file():
        return
    try:
        found = OmegaConf.to_container(OmegaConf.load(results))
        best_params, best_value = found["best_params"], float(found["best_value"])
        if not isinstance(best_params, dict):
            raise TypeError(f"best_params is {type(best_params).__name__}, not a mapping")
    except Exception as error:  # not YAML, or not the sweeper's: say so, keep the sweep's outcome
        log.warning("%s: not a search's results (%s); the parent gets no best trial", results, error)
        return
    redacted = redact_tree(found)
    if redacted != found:
        results.write_text(yaml.safe_dump(redacted, sort_keys=False))
    best_params = redact_mapping({str(key): value for key, value in best_params.items()})
    described = " ".join(f"{key}={value}" for key, value in best_params.items())[:MAX_TAG_VAL_LENGTH]
    client.log_batch(
        parent,
        metrics=[Metric(tag_names.SEARCH_BEST_VALUE, best_value, 0, 0)],
        tags=[RunTag(tag_names.SEARCH_BEST_PARAMS, described)],
    )
    client.log_artifact(parent, str(results))


class MLflowSweepCallback(Callback):
    """Parent run for a sweep: what was swept, how many jobs ran, finished and failed.

    Args:
        experiment_name: the experiment the jobs log to (the parent goes there too).
        tracking_uri: None for MLflow's own resolution.
        report: called as ``report(parent_run_id, tracking_uri, folder)`` when the sweep ends, e.g.
            to write a comparison of the children into ``folder`` (``comparison/`` in the sweep's
            folder) and log it onto the parent.
    """

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str | None = None,
        report: Callable[[str, str | None], Any] | None = None,
    ):
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.report = report
        self.parent_run_id: str | None = None
        self._store: str | None = None  # the store the driver resolved, for the jobs
        self._driver: tuple[str, int] | None = None  # (host, pid) of the sweep's own process
        self._credentials: dict[str, str] = {}  # for jobs whose process does not inherit them
        self._owns_parent = False
        self._sweep_dir: Path | None = None
        self._stop: SweepStop | None = None
        self._planned: int | None = None  # jobs the sweeper will launch, where it says

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()  # before the launcher logs each job's overrides
        client = mlflow.MlflowClient(self.tracking_uri)
        # As typed: read item by item, a ${...} in one would be resolved against the sweep's base config.
        swept = [redact_override(override) for override in OmegaConf.to_container(config.hydra.overrides.task)]
        # Under `mlflow run`, the run it made is the parent; the jobs must not log into it.
        self.parent_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
        if self.parent_run_id is None:
            self.parent_run_id = client.create_run(
                self._experiment_id(client), run_name="sweep " + " ".join(swept), tags=source_tags()
            ).info.run_id
            self._owns_parent = True
        os.environ[SWEEP_PARENT_ENV] = self.parent_run_id
        self._store = store_for_jobs(client.tracking_uri)
        self._driver = (socket.gethostname(), os.getpid())
        self._credentials = credentials_for_jobs(str(config.hydra.launcher.get("_target_", "")))
        self._sweep_dir = Path(config.hydra.sweep.dir).absolute()  # the tag says where, from any folder
        self._planned = planned_jobs(config)
        client.log_batch(
            self.parent_run_id,
            params=[Param("sweep.overrides", " ".join(swept)[:6000])],
            tags=[
                RunTag(tag_names.SWEEP, "true"),
                RunTag(tag_names.SWEEP_DIR, str(self._sweep_dir)),
                RunTag(tag_names.PROCESS_HOST, socket.gethostname()),
                RunTag(tag_names.PROCESS_PID, str(os.getpid())),
                RunTag(tag_names.NOTE, waiting_note(0, 0, self._planned)),
            ],
        )
        end_orphaned_sweeps(client, client.get_run(self.parent_run_id).info.experiment_id)
        self._stop = SweepStop(self._sweep_dir)
        self._stop.install()
        # Hydra skips on_multirun_end when a job failed (the sweeper re-raises its error).
        atexit.register(self._finish)
        log.info(
            "sweep parent run %s in experiment %s (%s jobs); %s",
            self.parent_run_id,
            self.experiment_name,
            self._planned or "?",
            self._link(client, self.parent_run_id),
        )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process, which may have started before the sweep (a Ray worker) or on another
        machine: the parent, the store unless the job's config names one, and where the launcher
        needs it (Ray) the credentials for the store."""
        if self.parent_run_id is None or (socket.gethostname(), os.getpid()) == self._driver:
            return  # a single run, or a job in the driver's own process (the basic launcher)
        os.environ[SWEEP_PARENT_ENV] = self.parent_run_id
        if self._stop is not None:
            os.environ.update(self._stop.environment())  # the job sees a stop of the sweep
        if self.tracking_uri is None and self._store is not None:
            os.environ["MLFLOW_TRACKING_URI"] = self._store
        os.environ.update(self._credentials)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """In the job's process, after its run ended: the sweep's progress on the parent and the console."""
        if self.parent_run_id is None:
            return  # a single run
        try:
            failed = getattr(job_return, "status", None) == JobStatus.FAILED
            job = int(OmegaConf.select(config, "hydra.job.num", default=0))
            said = record_job_end(self._client(), self.parent_run_id, self._planned, job, failed)
            log.info("sweep %s: %s", self.parent_run_id, said)
        except Exception as error:  # progress is a courtesy: a store that fails here must not fail the job
            log.warning("sweep %s: could not record the job's end (%s)", self.parent_run_id, describe(error))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _client(self) -> mlflow.MlflowClient:
        """The sweep's store: in a job's process, the one the driver resolved."""
        return mlflow.MlflowClient(self.tracking_uri or self._store)

    @staticmethod
    def _link(client: mlflow.MlflowClient, run_id: str) -> str:
        return ui_link(client.tracking_uri, client.get_run(run_id).info.experiment_id, run_id)

    def _experiment_id(self, client: mlflow.MlflowClient) -> str:
        experiment = client.get_experiment_by_name(self.experiment_name)
        return experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)

    def _finish(self) -> None:
        if self.parent_run_id is None:
            return
        parent, self.parent_run_id = self.parent_run_id, None
        atexit.unregister(self._finish)
        os.environ.pop(SWEEP_PARENT_ENV, None)
        client = mlflow.MlflowClient(self.tracking_uri)
        jobs, finished = self._count_jobs(client, parent)
        now = int(time.time() * 1000)
        client.log_batch(
            parent,
            metrics=[
                Metric("jobs", jobs, now, 0),
                Metric("jobs_finished", finished, now, jobs),
                Metric("jobs_failed", jobs - finished, now, jobs),
            ],
        )
        record_search(client, parent, self._sweep_dir / SEARCH_RESULTS)
        if self.report is not None:
            try:
                self.report(parent, self.tracking_uri, self._sweep_dir / "comparison")
            except Exception as error:  # a failed report must not hide the sweep's own outcome
                log.error("the sweep's comparison report failed: %s", error)
        signum = self._stop.signal_received
        status = "KILLED" if signum else "FINISHED" if jobs and finished == jobs else "FAILED"
        if signum:
            client.set_tag(parent, tag_names.FAILURE_REASON, f"the sweep was stopped by {signal.Signals(signum).name}")
        if self._owns_parent:
            client.set_terminated(parent, status)
        log.info(
            "sweep %s: %d jobs, %d finished, %d failed; %s",
            parent,
            jobs,
            finished,
            jobs - finished,
            self._link(client, parent),
        )
        self._stop.uninstall()
        self._stop.exit_if_stopped()

    def _count_jobs(self, client: mlflow.MlflowClient, parent: str) -> tuple[int, int]:
        """(jobs launched, jobs whose run FINISHED), from the parent's children in the store, or the job
        folders where there are more: a job that failed before its run started counts as failed where
        the driver sees its folder (this machine, or a shared file system)."""
        launched = (
            sum(1 for folder in self._sweep_dir.iterdir() if (folder / ".hydra").is_dir())
            if self._sweep_dir.is_dir()
            else 0
        )
        experiment = client.get_run(parent).info.experiment_id
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
        finished = sum(child.info.status == "FINISHED" for child in children)
        return max(launched, len(children)), finished


ORPHANED = "its sweep's driver process ended without ending it (kill -9, a crash or a lost machine)"


def end_orphaned_sweeps(client: mlflow.MlflowClient, experiment_id: str) -> list[str]:
    """End KILLED every sweep parent of the experiment still RUNNING whose driver process, on this
    machine, is gone: nothing else would ever end it. Returns their ids."""
    query = f"tags.{tag_names.SWEEP} = 'true' and attributes.status = 'RUNNING'"
    ended = []
    for parent in client.search_runs([experiment_id], query, max_results=1000):
        if _driver_is_gone(parent.data.tags):
            client.set_tag(parent.info.run_id, tag_names.FAILURE_REASON, ORPHANED)
            client.set_terminated(parent.info.run_id, "KILLED")
            log.warning("sweep %s was still RUNNING, but %s: it is ended KILLED", parent.info.run_id, ORPHANED)
            ended.append(parent.info.run_id)
    return ended


def _driver_is_gone(run_tags: dict) -> bool:
    if tag_names.read(run_tags, tag_names.PROCESS_HOST) != socket.gethostname():
        return False  # another machine's process: not ours to judge
    try:
        pid = int(tag_names.read(run_tags, tag_names.PROCESS_PID, ""))
    except ValueError:
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
