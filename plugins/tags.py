"""The names of the run tags this project writes and reads: one place for the runner, the callback,
compare, resume, reproduce and sync."""

from collections.abc import Mapping

# What the run is: the tags a person filters by.
MODEL = "model"
REG = "reg"
REGULARISED = "regularised"
DATA = "data"
EARLY_STOPPING = "early_stopping"
REDUCE_LR = "reduce_lr"

# How training ended (the callback).
STOP_REASON = "stop_reason"
RESTORED_BEST_WEIGHTS = "early_stopping.restored_best_weights"
FAILURE_REASON = "failure.reason"
TRACKING_ERROR = "tracking.error"
MISSING_EPOCHS = "missing_epochs"
MISSING_FILES = "missing_files"  # what the store did not take although it answered (a full disk)

# Where the code came from and how to run it again.
GIT_COMMIT = "git.commit"
GIT_DIRTY = "git.dirty"
REPRODUCE_COMMAND = "reproduce.command"
REPRODUCES = "reproduces"

# Resuming: how often, with which commands.
RESUMES = "resumes"

# Sweeps.
PARENT_RUN = "mlflow.parentRunId"
SWEEP = "sweep"
SWEEP_JOB = "sweep.job"
SEARCH_BEST_PARAMS = "search.best_params"  # a search's parent: its best trial's params, key=value ...
SEARCH_BEST_VALUE = "search.best_value"  # (a metric) and that trial's monitored value
BEST_CONFIGURATION = "best_configuration"  # a sweep parent's: the helping configuration with the best mean
TOP_MEAN_CONFIGURATION = "top_mean_configuration"  # where none helps: the top mean, which need not differ
TOP_RUN = "top_run"  # a sweep parent's: the id of that configuration's run with the best value
TOP_MODEL = "top_model"  # and the id of that run's logged model
NOTE = "mlflow.note.content"  # a run's description on its Overview page (a sweep parent's: the answer)

# The project's own bookkeeping, under one prefix, apart from the tags a person filters by: which
# process trains the run, which resume won it, where a sweep's files are. (Where a run's local backup
# is, this machine keeps itself: experiments/backups.py.)
INTERNAL = "internal."
PROCESS_HOST = "internal.process.host"
PROCESS_PID = "internal.process.pid"
RESUME_CLAIM = "internal.resume.claim"  # which resume process won the run, when several started at once
SWEEP_DIR = "internal.sweep.dir"
# Their names on runs logged before they moved under INTERNAL.
_EARLIER_NAMES = {
    PROCESS_HOST: "process.host",
    PROCESS_PID: "process.pid",
    RESUME_CLAIM: "resume.claim",
    SWEEP_DIR: "sweep.dir",
}


def read(run_tags: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """A run's tag ``name``, or the same tag under the name a run logged before it moved took."""
    return run_tags.get(name, run_tags.get(_EARLIER_NAMES.get(name, name), default))


def resume_command(number: int) -> str:
    return f"resume.{number}.command"


def resume_from_epoch(number: int) -> str:
    return f"resume.{number}.from_epoch"
