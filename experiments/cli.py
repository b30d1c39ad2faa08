"""Command-line glue shared by the entry points."""

from __future__ import annotations

import fcntl
import os
import shlex
from contextlib import contextmanager

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH
from omegaconf import OmegaConf
from sqlalchemy.engine import make_url

from experiments import CONF
from plugins.errors import first_line
from plugins.redaction import redact_text
from plugins.sender import got_no_answer

# MLflow draws a progress bar for each download and upload where tqdm is installed (the search extra
# brings it): noise in front of a command's one-line answer and in a job's log. A user may turn it on.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# The runner's tracking settings (conf/mlflow/default.yaml): the commands that read runs back find
# them where the runner logged them.
CONFIGURED = OmegaConf.load(CONF / "mlflow" / "default.yaml")


TRACKING_URI_HELP = "default: conf's mlflow.tracking_uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db"


class TrackingStoreError(Exception):
    """The tracking store cannot be opened; the message names it (a URL's password redacted)."""

    def __init__(self, message: str):
        super().__init__(redact_text(message))


def open_tracking_store(uri: str | None) -> mlflow.MlflowClient:
    """A client for the store at uri; None: the runner's, conf's ``mlflow.tracking_uri``, and where
    that is null MLflow's own resolution (MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``). Opened
    now, so that a store that is not one (a file that is no SQLite database, an unknown scheme) is
    one line, not a traceback."""
    uri = uri or CONFIGURED.tracking_uri
    try:
        with store_setup_lock(uri or mlflow.get_tracking_uri()):
            return mlflow.MlflowClient(uri)
    except Exception as error:  # SQLAlchemy, sqlite3, an unknown scheme: all mean the same to the user
        raise TrackingStoreError(
            f"cannot open the tracking store {uri or mlflow.get_tracking_uri()}: {first_line(error)}"
        ) from None


@contextmanager
def store_setup_lock(uri: str):
    """While a SQLite store is opened, hold a lock beside its file (``mlflow.db.lock``): MLflow makes a
    new store's tables on first use, and two commands doing so at the same moment break it for good
    (``table _alembic_tmp_... already exists``). Where the lock cannot be made, the store is opened
    without it (its folder is not writable: the store checks say so)."""
    database = make_url(uri).database if uri.startswith("sqlite:") else None
    if not database or database == ":memory:":
        yield
        return
    try:
        lock = open(f"{database}.lock", "a")  # held, and so locked, for the block below
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def read_run(client: mlflow.MlflowClient, run_id: str):
    """The run, or None when the store has no such run; TrackingStoreError when the store cannot be
    reached or read (one line naming it, whatever MLflow, requests or SQLAlchemy raised)."""
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if got_no_answer(error):  # refused, timed out, out of retries
            raise TrackingStoreError(f"cannot reach the tracking store {client.tracking_uri}") from None
        raise TrackingStoreError(f"cannot read run {run_id} from {client.tracking_uri}: {first_line(error)}") from None
    except Exception as error:  # DNS, TLS, a broken database file, ...
        raise TrackingStoreError(
            f"cannot reach the tracking store {client.tracking_uri}: {first_line(error)}"
        ) from None


def expand_quoted_option(argv: list[str], option: str) -> list[str]:
    """Replace `OPTION "a b c"` by `a b c`, split with a shell's quoting rules.

    MLproject hands a parameter over as one quoted argument (`--overrides 'model=cnn reg=l2'`);
    Hydra and argparse want them one per argument.
    """
    if option not in argv:
        return argv
    at = argv.index(option)
    given = argv[at + 1] if at + 1 < len(argv) else ""
    return [*argv[:at], *shlex.split(given), *argv[at + 2 :]]


def overlong_override_key(args: list[str]) -> str | None:
    """The first override whose key is longer than MLflow takes for a param or tag name, as an error
    line. Checked before Hydra composes: Hydra looks a key up as a file name, and crashes on a long one."""
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else ""
        if len(key) > MAX_ENTITY_KEY_LENGTH:
            return (
                f"{key[:40]}...: an override key of {len(key)} characters; params and tags take names "
                f"of at most {MAX_ENTITY_KEY_LENGTH}"
            )
    return None
