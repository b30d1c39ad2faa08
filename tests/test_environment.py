"""Where the runner writes and what it talks to: read-only stores and folders, a server whose health
check answers but whose API does not, override keys Hydra cannot take. Each is one line, exit 2, no
run, before TensorFlow loads.

The read-only cases run without root's power to write anywhere (CI runs as root): the command is
started through ``setpriv`` with CAP_DAC_OVERRIDE dropped, so file modes hold for it as for any user.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest

from experiments.cli import overlong_override_key
from experiments.preflight import unwritable
from plugins.tracking_server import API_TIMEOUT_S, api_problem
from tests.conftest import all_runs

READ_ONLY_DIR = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def as_a_plain_user() -> list[str]:
    """A command prefix under which file permissions bind: root without CAP_DAC_OVERRIDE; nothing
    for a user who is not root."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


def read_only(path):
    path.chmod(READ_ONLY_DIR if path.is_dir() else stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def test_unwritable_names_what_is_in_the_way(tmp_path):
    (tmp_path / "a-file").write_text("")
    assert unwritable(tmp_path / "new" / "deeper" / "best.keras") is None
    assert unwritable(tmp_path / "a-file" / "best.keras") == f"{tmp_path / 'a-file'} is a file, not a folder"


def test_an_override_key_longer_than_mlflow_takes_is_named():
    assert overlong_override_key(["model=cnn", "+mlflow.tags." + "k" * 250 + "=1"]).startswith(
        "mlflow.tags.kkkkkkkkkkkkkkkkkkkkkkkkkkkk...: an override key of 262 characters"
    )
    assert overlong_override_key(["model=cnn", "--multirun", "-m", "hydra.run.dir=" + "d" * 400]) is None


@pytest.mark.slow
def test_an_override_key_too_long_for_a_file_name_is_one_line(run_cli, tracking_uri):
    done = run_cli("experiments.train", "+mlflow.tags." + "k" * 300 + "=1", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("an override key of 312 characters; params and tags take names of at most 250")


def read_only_store_file(tmp_path, uri):
    read_only(tmp_path / "mlflow.db")
    return [], f"mlflow.tracking_uri={uri}: the store cannot be written: {tmp_path / 'mlflow.db'} is read-only"


def store_in_a_read_only_folder(tmp_path, uri):
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(tmp_path / "mlflow.db", folder / "mlflow.db")
    read_only(folder)
    moved = f"sqlite:///{folder / 'mlflow.db'}"
    return [f"mlflow.tracking_uri={moved}"], (
        f"mlflow.tracking_uri={moved}: the store cannot be written: the folder {folder} is not writable"
    )


def read_only_artifact_folder(tmp_path, uri):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    mlflow.MlflowClient(uri).create_experiment("keras-experiments", artifact_location=artifacts.as_uri())
    read_only(artifacts)
    return [], f"mlflow.tracking_uri={uri}: the run's files cannot be stored: the folder {artifacts} is not writable"


def read_only_output_folder(tmp_path, uri):
    folder = tmp_path / "outputs-here"
    folder.mkdir()
    read_only(folder)
    return [f"hydra.run.dir={folder}/run"], f"hydra.run.dir={folder}/run: the folder {folder} is not writable"


def read_only_checkpoint_folder(tmp_path, uri):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    read_only(folder)
    return [f"callbacks.model_checkpoint.filepath={folder}/best.keras"], (
        f"callbacks.model_checkpoint.filepath={folder}/best.keras: the folder {folder} is not writable"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        read_only_store_file,
        store_in_a_read_only_folder,
        read_only_artifact_folder,
        read_only_output_folder,
        read_only_checkpoint_folder,
    ],
)
def test_what_cannot_be_written_is_one_line_before_anything_runs(tmp_path, tracking_uri, run_cli, case):
    overrides, expected = case(tmp_path, tracking_uri)
    done = run_cli("experiments.train", *overrides, timeout=120, prefix=as_a_plain_user())
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {expected}"
    for path in tmp_path.iterdir():  # writable again, for pytest to clean up
        path.chmod(0o755)
    assert all_runs(tracking_uri) == []


class BrokenApi(BaseHTTPRequestHandler):
    """/health says OK; the REST API fails (``hang`` False) or never answers (True)."""

    hang = False

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/health":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        if self.hang:
            time.sleep(API_TIMEOUT_S + 5)
            return
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass  # quiet


@contextmanager
def broken_api_server(hang: bool):
    handler = type("Handler", (BrokenApi,), {"hang": hang})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_api_that_fails_behind_a_healthy_server_is_named():
    with broken_api_server(hang=False) as uri:
        assert api_problem(uri) == "HTTP 500 Internal Server Error"
    assert api_problem("sqlite:///local.db") is None


@pytest.mark.slow
@pytest.mark.parametrize(("hang", "problem"), [(False, "HTTP 500 Internal Server Error"), (True, "no answer in 10 s")])
def test_a_server_whose_api_fails_or_hangs_is_one_line_before_training(run_cli, hang, problem):
    with broken_api_server(hang) as uri:
        done = run_cli("experiments.train", f"mlflow.tracking_uri={uri}", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: mlflow.tracking_uri={uri}: the server answers its health check but not its API ({problem}); "
        "nothing was trained"
    )


@pytest.mark.slow
def test_commands_that_open_a_new_sqlite_store_at_the_same_moment_all_work(tmp_path):
    """MLflow makes a new store's tables on first use, which two processes at once break for good
    (``table _alembic_tmp_... already exists``); the commands take turns through a lock beside the file."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    opens = "from experiments.cli import open_tracking_store; open_tracking_store({!r}).search_experiments()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = [
        subprocess.Popen([sys.executable, "-c", opens.format(uri)], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    failures = [command.communicate(timeout=120)[1] for command in commands if command.wait(timeout=120) != 0]
    assert failures == []
    assert [e.name for e in mlflow.MlflowClient(uri).search_experiments()] == ["Default"]
    assert (tmp_path / "fresh.db.lock").is_file()
