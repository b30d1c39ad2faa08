"""Shared fixtures: composed configs, a real SQLite MLflow store per test, the CLI in a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# The metrics MLflowCallback logs for every epoch of a classifier compiled with accuracy.
EPOCH_KEYS = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_time_s",
    "gap_loss",
    "gap_accuracy",
]


@pytest.fixture(autouse=True)
def callback_errors_are_not_swallowed(caplog):
    """MLflowCallback logs an error of its own instead of raising it into training: in a test, a failure."""
    yield
    swallowed = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.getMessage().startswith("MLflowCallback failed")
    ]
    assert not swallowed, f"MLflowCallback swallowed an error (its traceback is in the captured log): {swallowed}"


@pytest.fixture(autouse=True)
def machine_state(tmp_path, monkeypatch) -> Path:
    """This machine's own records (where each run's Keras backup is), kept apart for each test."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def compose_cfg(tmp_path):
    """compose_cfg("model=mlp", "reg=[l2,dropout]") -> the config the runner would get."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        # ${hydra:runtime.output_dir} resolves only inside a Hydra app: point it at tmp_path.
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "output")
        HydraConfig.instance().set_config(cfg)
        return cfg

    return _compose


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once: creating one runs all of MLflow's migrations (~1 s)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, empty_store) -> str:
    """A fresh SQLite MLflow store for this test, used by in-process code and subprocesses."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def run_cli(tmp_path, tracking_uri):
    """run_cli("experiments.train", "model=cnn", ...) -> CompletedProcess, run from tmp_path; ``prefix``:
    a command that starts Python (e.g. setpriv)."""

    def _run(module: str, *args: str, timeout: int = 600, env: dict | None = None, prefix: list[str] | None = None):
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        return subprocess.run(
            [*(prefix or []), sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run


def all_runs(tracking_uri: str) -> list:
    """Every run in every experiment of the store."""
    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


def artifact_texts(client: mlflow.MlflowClient, run_id: str, folder) -> str:
    """Every text file of a run's artifacts, read back, joined."""
    local = client.download_artifacts(run_id, "", str(folder))
    return "\n".join(
        path.read_text(errors="replace")
        for path in Path(local).rglob("*")
        if path.is_file() and path.suffix in (".yaml", ".txt", ".csv")
    )


def not_a_database(folder: Path) -> Path:
    """A file named like an SQLite store that holds no database."""
    path = folder / "broken.db"
    path.write_bytes(b"these bytes are no SQLite database" * 100)
    return path


@contextlib.contextmanager
def small_disk(folder, size: str):
    """A tmpfs of ``size`` at ``folder``: a real full disk. Skipped, saying why, where none can be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here ({mounted.stderr.strip() or 'mount failed'}), so no full disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(
    folder: Path, port: int, backend_store_uri: str | None = None, options: tuple = (), env: dict | None = None
) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port (SQLite, or ``backend_store_uri``, and served artifacts in
    folder; ``options`` and ``env`` added), once it answers."""
    import time
    import urllib.request

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *options,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            backend_store_uri or f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "a"),
        start_new_session=True,
        # Tracking only: MLflow 3's job runner (GenAI jobs) would start eight more Python processes
        # per server, about 16 s of CPU taken from the training beside it on a 2-core machine.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_mlflow_server(server)
            raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def stop_mlflow_server(server: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (free port, SQLite + served artifacts under tmp_path); its URI."""
    server = start_mlflow_server(tmp_path, port := free_port())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(server)


@pytest.fixture
def request_recorder():
    """An HTTP server on 127.0.0.1 that answers 503 to everything and keeps each request's line and
    headers: where a colleague's edited run would send a user's credentials. Yields (URL, requests)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def _record(self):
            seen.append(f"{self.requestline}\n{self.headers}")
            self.send_response(503)
            self.end_headers()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
