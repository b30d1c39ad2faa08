"""The names of the run tags this project writes and reads: one place for the runner, the callback,
compare, resume, reproduce and sync."""

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

# Resuming: which process trains the run, and where its local backup is.
BACKUP_DIR = "backup.dir"
PROCESS_HOST = "process.host"
PROCESS_PID = "process.pid"
RESUMES = "resumes"
RESUME_CLAIM = "resume.claim"  # which resume process won the run, when several started at once

# Sweeps.
PARENT_RUN = "mlflow.parentRunId"
SWEEP = "sweep"
SWEEP_JOB = "sweep.job"
SWEEP_DIR = "sweep.dir"


def resume_command(number: int) -> str:
    return f"resume.{number}.command"


def resume_from_epoch(number: int) -> str:
    return f"resume.{number}.from_epoch"
