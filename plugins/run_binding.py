"""The MLflow run a fit logs into: joined, started or reopened, and ended with the right status.

A run the callback started for a fit ends when the fit does. If the fit raised, it ends when the
process exits, when the IPython cell that ran it ends, or when the thread's next fit begins: KILLED
for an interrupt, FAILED otherwise.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import keras
import mlflow
from mlflow.entities import Metric, RunTag

from plugins import logged_model
from plugins.errors import first_line
from plugins.redaction import redact_mapping, redact_text
from plugins.tracking_server import wait_for_server

log = logging.getLogger(__name__)

# By run id: how to end the run of a fit that began and has not ended (see end_fit_left_open).
_UNFINISHED: dict[str, Callable[[BaseException | None], None]] = {}


@dataclass(frozen=True)
class RunSettings:
    """How a run the callback starts is made; None leaves each to MLflow."""

    experiment_name: str | None = None
    run_name: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    wait_for_server_s: float = 0.0  # how long starting a run waits for an HTTP server that does not answer
    run_id: str | None = None  # a logged run to reopen and continue
    # True: CPU, memory, disk and GPU use (MLflow's system/... metrics); False: MLflow's own setting decides.
    log_system_metrics: bool = False


@dataclass
class RunBinding:
    """The run of a fit. ``fresh``: made just now, nothing to read back. ``ends_with_fit``: the
    callback started it for the fit, so the fit's end (or its failure) ends it."""

    run_id: str
    client: mlflow.MlflowClient
    fresh: bool
    ends_with_fit: bool
    _at_exit: Callable[[], None] | None = field(default=None, init=False, repr=False)

    def watch_unfinished(self, end_unfinished: Callable[[BaseException | None], None]) -> None:
        """Have ``end_unfinished(error)`` called if the fit never reaches its end."""
        fit_thread = threading.current_thread()

        def at_exit() -> None:
            on_main_thread = fit_thread is threading.main_thread()  # the thread a script's error ends
            end_unfinished(_error_ending_the_script() if on_main_thread else None)

        self._at_exit = at_exit
        atexit.register(at_exit)
        _UNFINISHED[self.run_id] = end_unfinished
        if fit_thread is threading.main_thread():
            _end_with_cell(self.run_id, end_unfinished)

    def unwatch(self) -> None:
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
        _UNFINISHED.pop(self.run_id, None)


def start_run(settings: RunSettings) -> mlflow.ActiveRun:
    """Start a run (under ``mlflow run``: join the one it made), or reopen ``settings.run_id``."""
    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.wait_for_server_s > 0:
        wait_for_server(mlflow.get_tracking_uri(), settings.wait_for_server_s)
    if settings.experiment_name and "MLFLOW_RUN_ID" not in os.environ:  # else `mlflow run` chose it
        mlflow.set_experiment(settings.experiment_name)
    system_metrics = True if settings.log_system_metrics else None
    if settings.run_id is not None:  # its name and tags stay as logged
        return mlflow.start_run(run_id=settings.run_id, log_system_metrics=system_metrics)
    tags = {key: str(value) for key, value in redact_mapping(settings.tags).items()}
    name = settings.run_name and redact_text(settings.run_name)
    return mlflow.start_run(run_name=name, tags=tags, log_system_metrics=system_metrics)


def bind_run(settings: RunSettings, started: RunBinding | None) -> RunBinding | None:
    """The run this fit logs into: the one ``start_run`` made for the caller, the active one, or a new
    one it ends; None (tracking off, with a warning) when MLflow cannot be reached."""
    try:
        active = mlflow.active_run()
        if started is not None and active is not None and active.info.run_id == started.run_id:
            return started
        if active is not None:
            return RunBinding(active.info.run_id, mlflow.MlflowClient(), fresh=False, ends_with_fit=False)
        run = start_run(settings)
        joined = "MLFLOW_RUN_ID" in os.environ  # `mlflow run` made it and ends it
        fresh = settings.run_id is None and not joined
        return RunBinding(run.info.run_id, mlflow.MlflowClient(), fresh=fresh, ends_with_fit=not joined)
    except Exception as error:  # unreachable server, bad URI: train without tracking
        log.warning("MLflow tracking is off for this fit: could not start a run (%s)", first_line(error))
        return None


def finish_active_run(
    status: str,
    metrics: Mapping[str, float] | None,
    tags: Mapping[str, str] | None,
    server_unreachable: bool,
    folders: Mapping[str, Path] | None = None,
) -> tuple[str | None, list]:
    """Log last metrics, tags and ``folders`` (artifact folder -> local folder) and end the active run
    with ``status``; (its id, the calls the server did not take). Never raises for the tracking server."""
    run = mlflow.active_run()
    if run is None:
        return None, []
    run_id, client, unsent = run.info.run_id, mlflow.MlflowClient(), []
    # The server gave no answer to the last attempt moments ago: one try each, not minutes of retries.
    retries = _environment("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0") if server_unreachable else nullcontext()
    # MLflow prints the run's URL as its tracking URI has it: with a password, if the URI holds one.
    uri = mlflow.get_tracking_uri()
    url_print = (
        _environment("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true") if redact_text(uri) != uri else nullcontext()
    )
    with retries, url_print:
        if metrics or tags:
            timestamp = int(time.time() * 1000)
            points = end_points(client, run_id, metrics or {}, timestamp, linked=not server_unreachable)
            last = partial(
                client.log_batch,
                run_id,
                metrics=points,
                tags=[RunTag(key, str(value)) for key, value in redact_mapping(tags or {}).items()],
            )
            if not _sent(last):
                unsent.append(("last metrics and tags", last))
            elif metrics:
                with suppress(Exception):  # the registry's description is a courtesy: never fail the run's end
                    logged_model.describe_versions(client, run_id, metrics)
        for name, folder in (folders or {}).items():
            if Path(folder).is_dir() and any(Path(folder).iterdir()):
                upload = partial(client.log_artifacts, run_id, str(folder), name or None)  # "": the top
                if not _sent(upload):
                    unsent.append((f"{name}/" if name else ", ".join(sorted(os.listdir(folder))), upload))
        try:
            mlflow.end_run(status)  # it takes the run off MLflow's stack first, so nothing ends it twice
        except Exception:
            unsent.append((f"ending the run {status}", partial(client.set_terminated, run_id, status)))
    return run_id, unsent


def end_points(
    client: mlflow.MlflowClient, run_id: str, metrics: Mapping[str, float], timestamp: int, linked: bool
) -> list:
    """The last metrics as points: the logged model's where the run has one (at its step, with the
    test split as their data set), else at step 0. Not ``linked``: plain points, no question to a
    server that gave no answer (one try for what must be sent, not one more for a courtesy)."""
    plain = [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
    if not metrics or not linked:
        return plain
    try:
        return logged_model.linked_points(client, run_id, metrics, timestamp)
    except Exception:  # the store cannot say which model: the points stand on their own
        return plain


def end_fit_left_open() -> None:
    """The active run is one an MLflowCallback started for a fit that raised or was interrupted, and
    the process went on (a loop that catches errors): end it FAILED with what that fit gathered, so
    this fit gets a run of its own instead of logging into it."""
    active = mlflow.active_run()
    end_unfinished = _UNFINISHED.get(active.info.run_id) if active else None
    if end_unfinished is None or _inside_another_fit():  # a fit run by another's callback: that one goes on
        return
    log.warning(
        "MLflow run %s of an earlier fit that raised or was interrupted was still open; it ends FAILED "
        "and this fit gets a run of its own",
        active.info.run_id,
    )
    end_unfinished(None)


def is_chief(model) -> bool:
    """Where several processes train one model only the chief logs: under a multi-worker
    tf.distribute strategy the task of type chief, or worker 0 where the cluster has none; on JAX
    process 0 (``jax.distributed``); on PyTorch rank 0 of ``torch.distributed``'s process group."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # loaded with Keras' JAX backend

        return jax.process_index() == 0
    if backend == "torch":
        return _torch_rank() == 0
    resolver = getattr(getattr(model, "distribute_strategy", None), "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def _torch_rank() -> int:
    import torch.distributed as distributed  # loaded with Keras' PyTorch backend

    return distributed.get_rank() if distributed.is_available() and distributed.is_initialized() else 0


def _sent(call) -> bool:
    try:
        call()
        return True
    except Exception as error:  # the server is down or refuses: the caller keeps the call
        log.warning("MLflow tracking failed (%s)", first_line(error))
        return False


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """An MLflow setting for a moment: MLflow reads these from the environment at each use."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _end_with_cell(run_id: str, end_unfinished: Callable[[BaseException | None], None]) -> None:
    """In IPython or Jupyter, a fit on the main thread, where cells run, that has not ended when its
    cell ends has raised: its run ends then, with the cell's error, not at the next fit or the
    kernel's exit."""
    shell = _ipython_shell()
    if shell is None:
        return

    def after_cell(result) -> None:
        shell.events.unregister("post_run_cell", after_cell)
        if _UNFINISHED.get(run_id) is end_unfinished:
            end_unfinished(result.error_in_exec)

    shell.events.register("post_run_cell", after_cell)


def _inside_another_fit() -> bool:
    """Whether this fit runs inside another fit on this thread (called from one of its callbacks)."""
    fits = [frame.f_code for frame, _ in traceback.walk_stack(None) if frame.f_code.co_name == "fit"]
    return bool(fits) and fits[0] in fits[1:]


def _ipython_shell():
    """The IPython (or Jupyter) shell running this code, if any; IPython is not imported here."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _error_ending_the_script() -> BaseException | None:
    """At exit: the exception no code caught, which Python keeps as sys.last_value. In an interactive
    session that may be an older one, so there it is not known."""
    if hasattr(sys, "ps1") or sys.flags.interactive or _ipython_shell() is not None:
        return None
    return getattr(sys, "last_value", None)
