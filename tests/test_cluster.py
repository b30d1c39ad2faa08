"""Sweeps on cluster engines: Hydra's Ray launcher (a Ray it starts, and a running `ray start --head`
cluster) and its submitit launcher (submitit_local, as SLURM runs jobs), each one parent run with
its children; the launcher configs, the checks before a sweep, and what a job gets from the driver."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from experiments.checks import ConfigError
from experiments.cluster import check_launcher, cpus_per_job, ray_refusal, refuse_unless_listening, register
from plugins.sweep import SWEEP_PARENT_ENV, MLflowSweepCallback, credentials_for_jobs, store_for_jobs
from plugins.sweep_stop import DRIVER_PID_ENV, STOP_FILE_ENV, SweepStop
from tests.conftest import all_runs, free_port

LAUNCHERS = {
    "ray": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}
register()  # conf/hydra/launcher/ray.yaml's resolver, as experiments.train registers it
SWEEP = ("-m", "reg=none,l2", "trainer.epochs=2", "trainer.verbose=0")


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("threads", [None, 2])
def test_each_launcher_config_is_the_plugin_s_launcher_with_the_job_s_cpus(compose_cfg, name, threads):
    cfg = compose_cfg(f"hydra/launcher={name}", f"trainer.threads={'null' if threads is None else threads}")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == LAUNCHERS[name]
    assert get_class(launcher["_target_"]).__name__ == LAUNCHERS[name].rsplit(".", 1)[1]  # installed, importable
    if name == "ray":
        assert launcher["ray"]["remote"] == {"num_cpus": threads or 1, "max_retries": 0}
        assert launcher["ray"]["init"]["object_store_memory"] is None  # a running cluster refuses one
    else:
        assert launcher["cpus_per_task"] == threads
        assert launcher["submitit_folder"].endswith("/.submitit/%j")


def test_only_ray_s_jobs_carry_the_store_s_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "")
    credentials = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret-pw"}
    assert credentials_for_jobs(LAUNCHERS["ray"]) == credentials  # Ray's workers do not inherit them
    assert credentials_for_jobs(LAUNCHERS["submitit_slurm"]) == {}  # inherited; submitit pickles jobs to disk
    assert credentials_for_jobs("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher") == {}


def test_the_sweep_dir_is_absolute_from_where_the_sweep_started(compose_cfg):
    sweep_dir = Path(compose_cfg().hydra.sweep.dir)
    assert sweep_dir.is_absolute() and sweep_dir.parent.parent == Path.cwd() / "multirun"


def test_a_job_in_another_process_gets_the_parent_the_driver_s_store_and_the_stop_file(monkeypatch, tmp_path):
    monkeypatch.delenv(SWEEP_PARENT_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///worker-relative.db")
    sweep = MLflowSweepCallback("exp")
    sweep.on_job_start(config=None)  # not a sweep
    assert SWEEP_PARENT_ENV not in os.environ
    sweep.parent_run_id, sweep._store = "parent123", "sqlite:////data/mlflow.db"
    sweep._driver = (socket.gethostname(), os.getpid())
    sweep.on_job_start(config=None)  # the basic launcher: the job runs in the driver, which has both
    assert SWEEP_PARENT_ENV not in os.environ and os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///worker-relative.db"
    sweep._driver, sweep._credentials = ("another-host", os.getpid()), {"MLFLOW_TRACKING_PASSWORD": "pw"}
    sweep._stop = SweepStop(tmp_path)
    for name in ("MLFLOW_TRACKING_PASSWORD", STOP_FILE_ENV, DRIVER_PID_ENV):
        monkeypatch.delenv(name, raising=False)
    sweep.on_job_start(config=None)
    assert os.environ[STOP_FILE_ENV] == str(tmp_path / ".stopped")
    assert os.environ[DRIVER_PID_ENV] == str(os.getpid())  # the driver's: here the test's own
    assert os.environ[SWEEP_PARENT_ENV] == "parent123"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////data/mlflow.db"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw"


def test_a_store_named_in_the_config_is_the_job_s_own(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    sweep = MLflowSweepCallback("exp", tracking_uri="http://127.0.0.1:5000")
    sweep.parent_run_id, sweep._store, sweep._driver = "parent123", "http://127.0.0.1:5000", ("another-host", 1)
    sweep.on_job_start(config=None)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"  # the job's config names the store


def test_the_store_a_job_is_given_is_absolute_and_carries_no_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_for_jobs("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert store_for_jobs("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"
    assert store_for_jobs("mlruns") == str(tmp_path / "mlruns")
    assert store_for_jobs("https://mlflow.example.org") == "https://mlflow.example.org"
    assert store_for_jobs("https://alice:s3cret@mlflow.example.org") is None


def test_a_ray_job_reserves_one_cpu_when_threads_are_not_given():
    assert (cpus_per_job(None), cpus_per_job(4)) == (1, 4)


def test_a_ray_address_where_nothing_listens_is_one_line_in_seconds():
    port = free_port()
    key = "hydra.launcher.ray.init.address"
    with pytest.raises(ConfigError, match=rf"^{key}=127.0.0.1:{port}: no Ray cluster answers"):
        refuse_unless_listening(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="not host:port, ray://host:port or auto"):
        refuse_unless_listening("head-node")


def test_a_refused_ray_token_says_how_to_give_the_cluster_s():
    try:
        try:
            raise RuntimeError("Failed to connect to GCS: AuthenticationError: InvalidAuthToken")
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from cause
    except ConnectionError as error:
        message = ray_refusal("127.0.0.1:6379", error)
    key = "hydra.launcher.ray.init.address"
    assert message.startswith(f"{key}=127.0.0.1:6379: the Ray cluster refused this driver's token")
    assert "RAY_AUTH_MODE=token" in message
    other = ray_refusal(None, OSError("No space left on device\nSee the log for more"))
    assert other == "hydra/launcher=ray: starting Ray on this machine: No space left on device"


def test_a_slurm_sweep_without_sbatch_is_one_line(compose_cfg, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = compose_cfg("hydra/launcher=submitit_slurm")
    with pytest.raises(ConfigError, match="^hydra/launcher=submitit_slurm: sbatch is not on this machine's PATH"):
        check_launcher(cfg)


# --- real sweeps. Ray listens on every address of the machine: each Ray here runs in a network
# namespace of its own with only the loopback up (unshare; CI runs as root), and a process namespace,
# so that nothing of it outlives the command.


def in_private_network(then: str = "", run: str = '"$@"') -> list[str]:
    """A prefix for run_cli: the command runs in new network and process namespaces, loopback up,
    after the shell commands ``then``, as the shell command ``run`` says (``"$@"`` is the command)."""
    script = f"ip link set lo up && {then + ' && ' if then else ''}{run}"
    namespaces = ["--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return ["unshare", *namespaces, "sh", "-c", script, "sh"]


@pytest.fixture
def ray_env(tmp_path):
    """Ray's files (a short folder: it puts sockets there) and a home of the test's own (its token)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    (tmp_path / "home").mkdir()
    yield {"RAY_TMPDIR": str(ray_tmp), "HOME": str(tmp_path / "home")}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def assert_one_parent_with_both_children(tracking_uri: str, sweep_folder: Path) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(tracking_uri)
    runs = all_runs(tracking_uri)
    parents = [run for run in runs if run.data.tags.get("sweep") == "true"]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(child.data.tags["reg"] for child in children) == ["l2", "none"]
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    metrics = parent.data.metrics
    assert (metrics["jobs"], metrics["jobs_finished"], metrics["jobs_failed"]) == (2, 2, 0)
    assert "comparison/verdicts.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    sweep_dir = Path(parent.data.tags["internal.sweep.dir"])
    assert sweep_dir.parent.parent == sweep_folder / "multirun"  # where the sweep was started
    assert sorted(child.data.tags["sweep.job"] for child in children) == ["0", "1"]
    for number in ("0", "1"):
        assert (sweep_dir / number / "history.csv").is_file()
    return parent


@pytest.mark.slow
def test_a_sweep_on_a_ray_the_launcher_starts(run_cli, tracking_uri, tmp_path, ray_env):
    done = run_cli("experiments.train", *SWEEP, "hydra/launcher=ray", env=ray_env, prefix=in_private_network())
    assert done.returncode == 0, done.stderr[-3000:]
    parent = assert_one_parent_with_both_children(tracking_uri, tmp_path)
    job_log = (Path(parent.data.tags["internal.sweep.dir"]) / "0" / "train.log").read_text()
    assert "threads: 1, the CPUs Ray reserved for this job" in job_log  # trainer.threads is null


def ray_head(folder: Path, port: int = 6379) -> str:
    """Shell commands that start a Ray head with token auth in ``folder``, without the store in its
    environment, and come back to the test's folder."""
    ray = Path(sys.executable).parent / "ray"  # the ray extra's command, beside this Python
    return (
        f"cd {folder} && {ray} get-auth-token --generate > head.log 2>&1 && "
        f"env -u MLFLOW_TRACKING_URI RAY_AUTH_MODE=token {ray} start --head --node-ip-address=127.0.0.1 "
        f"--port={port} --num-cpus=2 --include-dashboard=false >> head.log 2>&1 && cd {folder.parent}"
    )


@pytest.mark.slow
def test_a_sweep_on_a_running_ray_cluster_with_token_auth(run_cli, tracking_uri, tmp_path, ray_env):
    """The head is started elsewhere, without the store in its environment; the driver passes a
    relative SQLite store and the parent to jobs in workers that were running before the sweep."""
    (tmp_path / "head").mkdir()
    password = "pw-Ray-must-not-log-1"  # carried to the workers; the SQLite store has no use for it
    env = {**ray_env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "RAY_AUTH_MODE": "token"}
    env |= {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": password}
    address = "hydra.launcher.ray.init.address=127.0.0.1:6379"
    prefix = in_private_network(ray_head(tmp_path / "head"))
    done = run_cli("experiments.train", *SWEEP, "hydra/launcher=ray", address, env=env, prefix=prefix)
    assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "head" / "head.log").read_text()[-2000:]
    assert "Ray is already running" in done.stdout  # the launcher used the cluster the check joined
    assert_one_parent_with_both_children(tracking_uri, tmp_path)
    assert not (tmp_path / "head" / "multirun").exists() and not (tmp_path / "head" / "mlflow.db").exists()
    assert password not in done.stdout + done.stderr
    for folder in (tmp_path, Path(ray_env["RAY_TMPDIR"])):  # the store, the job folders, Ray's logs
        holding = [path for path in folder.rglob("*") if path.is_file() and password.encode() in path.read_bytes()]
        assert holding == []


@pytest.mark.slow
def test_sigterm_stops_a_sweep_on_a_running_ray_cluster(run_cli, tracking_uri, tmp_path, ray_env):
    """The jobs run in the cluster's workers, which the signal to the sweep's command cannot reach:
    they stop at the sweep's stop file, and every run ends KILLED."""
    (tmp_path / "head").mkdir()
    both_training = f"[ $(ls {tmp_path}/multirun/*/*/*/history.csv 2>/dev/null | wc -l) -ge 2 ]"
    run = (
        f'"$@" & pid=$!; for i in $(seq 240); do {both_training} && break; sleep 0.5; done; kill -TERM $pid; wait $pid'
    )
    env = {**ray_env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "RAY_AUTH_MODE": "token"}
    sweep = ("-m", "reg=none,l2", "trainer.epochs=300", "callbacks=basic", "trainer.verbose=0", "hydra/launcher=ray")
    address = "hydra.launcher.ray.init.address=127.0.0.1:6379"
    prefix = in_private_network(ray_head(tmp_path / "head"), run)
    done = run_cli("experiments.train", *sweep, address, env=env, prefix=prefix)
    assert done.returncode == 143, done.stderr[-3000:]
    runs = {run.data.tags.get("reg", "parent"): run for run in all_runs(tracking_uri)}
    assert {name: run.info.status for name, run in runs.items()} == {
        name: "KILLED" for name in ("parent", "none", "l2")
    }
    assert runs["parent"].data.tags["failure.reason"] == "the sweep was stopped by SIGTERM"
    assert all(runs[reg].data.metrics["epochs_run"] < 300 for reg in ("none", "l2"))


@pytest.mark.slow
def test_a_job_no_ray_node_can_schedule_is_one_line_and_no_run(run_cli, tracking_uri, ray_env):
    """A task reserving more CPUs than any node has would wait for ever, the parent RUNNING."""
    done = run_cli(
        "experiments.train",
        *SWEEP,
        "hydra/launcher=ray",
        "trainer.threads=64",
        env=ray_env,
        prefix=in_private_network(),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    cpus = len(os.sched_getaffinity(0))
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: trainer.threads=64: each job's Ray task would reserve 64 CPUs, and no node of the Ray cluster "
        f"has more than {cpus}; give trainer.threads={cpus} or fewer"
    )
    assert all_runs(tracking_uri) == []


@pytest.mark.slow
def test_a_ray_head_that_is_not_there_is_one_line_and_no_run(run_cli, tracking_uri):
    address = f"127.0.0.1:{free_port()}"
    done = run_cli("experiments.train", *SWEEP, "hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: hydra.launcher.ray.init.address={address}: no Ray cluster answers there (Connection refused); "
        "start one with `ray start --head`, or leave it null and the sweep starts Ray on this machine"
    ]
    assert all_runs(tracking_uri) == []


@pytest.mark.slow
def test_a_sweep_with_submitit_local(run_cli, tracking_uri, tmp_path):
    done = run_cli("experiments.train", *SWEEP, "hydra/launcher=submitit_local", "trainer.threads=1")
    assert done.returncode == 0, done.stderr[-3000:]
    parent = assert_one_parent_with_both_children(tracking_uri, tmp_path)
    logs = sorted((Path(parent.data.tags["internal.sweep.dir"]) / ".submitit").glob("*/*_log.err"))
    assert len(logs) == 2  # each job ran in a process of its own that submitit started
