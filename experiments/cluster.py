"""What a sweep's cluster launcher needs, checked before the sweep's parent run is made: a Ray
cluster that answers and takes this driver, an ``sbatch`` to submit to SLURM with. Each problem is
one ConfigError naming the key and what to do (docs/scale.md)."""

from __future__ import annotations

import shutil
import socket
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.checks import ConfigError
from plugins.errors import first_line

RAY_ADDRESS_KEY = "hydra.launcher.ray.init.address"
RAY_TOKEN_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token "
    "(ray get-auth-token on the head node prints it)"
)


def cpus_per_job(threads: int | None) -> int:
    """The CPUs a Ray task reserves: ``trainer.threads``, or 1 when it is null (a task given no
    number would reserve none, and Ray would start every job at once). conf/hydra/launcher/ray.yaml
    reads it as ``${cpus_per_job:${trainer.threads}}``; a job with null threads trains with what it
    reserved (experiments.training.ray_task_cpus)."""
    return threads or 1


def register() -> None:
    if not OmegaConf.has_resolver("cpus_per_job"):
        OmegaConf.register_new_resolver("cpus_per_job", cpus_per_job)


def check_launcher(config: DictConfig) -> None:
    """The sweep's launcher's engine, ready for its jobs. A Ray is started or joined here, and the Ray
    launcher then uses it as it is (it starts none when one is initialised)."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith(".RayLauncher"):
        start_ray(OmegaConf.to_container(launcher.ray.init, resolve=True) or {})
        refuse_unschedulable(cpus_per_job(OmegaConf.select(config, "trainer.threads")))
    elif target.endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=submitit_slurm: sbatch is not on this machine's PATH; start the sweep "
            "on a SLURM login node, or use hydra/launcher=submitit_local to try it here"
        )


def start_ray(init: dict[str, Any]) -> None:
    """``ray.init(**init)``: a Ray for the sweep (address null), or the running cluster at address."""
    address = init.get("address")
    if address and address != "auto":
        refuse_unless_listening(address)
    import ray  # the ray extra; imported only for a Ray sweep (a second)

    try:
        ray.init(**init)
    except Exception as error:
        raise ConfigError(ray_refusal(address, error)) from None


def refuse_unschedulable(cpus: int) -> None:
    """A Ray task that reserves more CPUs than any node has waits for ever, and the sweep with it."""
    import ray

    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if cpus > largest:
        raise ConfigError(
            f"trainer.threads={cpus}: each job's Ray task would reserve {cpus} CPUs, and no node of the Ray "
            f"cluster has more than {largest:g}; give trainer.threads={max(1, int(largest))} or fewer"
        )


def refuse_unless_listening(address: str, timeout_s: float = 3.0) -> None:
    """Ray waits minutes for a head that is not there; a TCP connection says so in seconds."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{RAY_ADDRESS_KEY}={address}: not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(
            f"{RAY_ADDRESS_KEY}={address}: no Ray cluster answers there ({error.strerror or error}); "
            "start one with `ray start --head`, or leave it null and the sweep starts Ray on this machine"
        ) from None


def ray_refusal(address: str | None, error: BaseException) -> str:
    """One line for a ``ray.init`` that failed; a refused token says how to give the right one."""
    chain, cause = [], error
    while cause is not None:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    if any("InvalidAuthToken" in text or "AuthenticationError" in text for text in chain):
        return f"{RAY_ADDRESS_KEY}={address}: the Ray cluster refused this driver's token; {RAY_TOKEN_HELP}"
    where = f"{RAY_ADDRESS_KEY}={address}" if address else "hydra/launcher=ray: starting Ray on this machine"
    return f"{where}: {first_line(error)}"
