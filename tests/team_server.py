"""A real PostgreSQL and a real `mlflow server` with MLflow's basic-auth app on it, on 127.0.0.1:
what docs/team-server.md sets up, for the tests that use it.

PostgreSQL is Debian's (`apt-get install postgresql`, which .ci/run does where it is missing): its
binaries are found under /usr/lib/postgresql/<version>/bin. As root (CI) it runs as the postgres
user, which PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import start_mlflow_server

ADMIN_PASSWORD = "admin-Pw-7731-x"  # nothing secret: a throwaway server's; the tests look for it in the runs


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"no PostgreSQL {name} under /usr/lib/postgresql (apt-get install postgresql; .ci/run does)"
    return found[-1]


@dataclass
class Postgres:
    folder: Path
    port: int

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *command: str) -> None:
        subprocess.run(_as_postgres([*command]), check=True, capture_output=True, text=True)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres(port: int, databases: list[str]) -> Postgres:
    """A new cluster in a folder of its own (trust auth, 127.0.0.1 only) with ``databases`` made."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
    server = Postgres(folder, port)
    server.run(postgres_bin("initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    server.run(
        postgres_bin("pg_ctl"), "-D", str(folder / "data"), "-o", options, "-l", str(folder / "log"), "-w", "start"
    )
    for database in databases:
        server.run(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
    return server


def stop_postgres(server: Postgres) -> None:
    subprocess.run(
        _as_postgres([postgres_bin("pg_ctl"), "-D", str(server.folder / "data"), "-m", "fast", "-w", "stop"]),
        capture_output=True,
    )
    shutil.rmtree(server.folder, ignore_errors=True)


def start_auth_server(folder: Path, port: int, postgres: Postgres) -> subprocess.Popen:
    """`mlflow server --app-name basic-auth` on 127.0.0.1:port: runs and users in PostgreSQL,
    artifacts served from ``folder`` (proxied), the admin's password ADMIN_PASSWORD."""
    (folder / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {postgres.uri('mlflow_auth')}\n"
        f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check is a PBKDF2 hash (tens of ms of CPU): cached for a minute,
        # as docs/team-server.md advises, a training job's requests do not queue behind it.
        "auth_cache_ttl_seconds = 60\n"
    )
    environment = {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only",
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    return start_mlflow_server(folder, port, postgres.uri("mlflow"), ("--app-name", "basic-auth"), environment)
