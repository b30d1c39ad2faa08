"""The runner on each Keras 3 backend: which one this process trains on, loading it with a one-line
error where its package is missing, and threads and determinism set the backend's way.

The backend is Keras' own choice (``KERAS_BACKEND``, else ``~/.keras/keras.json``, else TensorFlow).
Nothing here imports Keras before ``load_training``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

from experiments.checks import ConfigError
from plugins.provenance import BACKEND_PACKAGES

log = logging.getLogger(__name__)

BACKENDS = ("tensorflow", "jax", "torch")  # the ones the runner trains on; also the allow-list for a logged run's
DEFAULT = "tensorflow"
INSTALL = {"tensorflow": "pip install -e .", "jax": 'pip install -e ".[jax]"', "torch": 'pip install -e ".[torch]"'}


def load_training():
    """experiments.training, with Keras on its backend; a missing or unknown backend is a ConfigError."""
    named = os.environ.get("KERAS_BACKEND")
    if named is not None and named not in BACKENDS:
        raise ConfigError(f"KERAS_BACKEND={named}: expected one of {', '.join(BACKENDS)}")
    # JAX reports at INFO each accelerator it looked for and did not find ("Unable to initialize backend 'tpu'").
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    try:
        return importlib.import_module("experiments.training")
    except ImportError as error:  # ModuleNotFoundError of the backend's own package, raised by `import keras`
        backend = named or DEFAULT
        missing = (error.name or "").split(".")[0]
        if missing not in BACKEND_PACKAGES.get(backend, ()):
            raise
        raise ConfigError(
            f"KERAS_BACKEND={backend}: {missing} is not installed (install it: {INSTALL[backend]})"
        ) from None


def installed(backend: str) -> bool:
    """Whether ``backend``'s packages are installed here, without importing them."""
    return all(importlib.util.find_spec(package) is not None for package in BACKEND_PACKAGES.get(backend, ("?",)))


def limit_threads(backend: str, threads: int, slot: int) -> None:
    """Train on ``threads`` cores. TensorFlow sizes its thread pools; JAX's XLA sizes its pool by
    the CPUs the process may run on, and PyTorch's intra-op pool may be set at any time, so both are
    pinned to ``threads`` cores, the ``slot``-th group of them (a sweep's job number): parallel jobs
    on one machine each get their own cores instead of all fighting for them."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores_for(threads, slot, sorted(os.sched_getaffinity(0))))
    elif backend == "jax":  # macOS and Windows pin no process to cores
        log.warning("trainer.threads=%d: this system cannot hold JAX to %d cores; it uses all", threads, threads)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)


def cores_for(threads: int, slot: int, available: list[int]) -> set[int]:
    """The ``slot``-th group of ``threads`` cores among ``available``, wrapping round."""
    count = min(threads, len(available))
    start = slot * count
    return {available[(start + i) % len(available)] for i in range(count)}


def make_deterministic(backend: str) -> None:
    """Same seed, same metrics. XLA on the CPU (JAX) is deterministic as it is."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)


def tensorboard_runs(backend: str) -> bool:
    """Keras' TensorBoard callback writes through TensorFlow's summaries, on any backend: whether
    TensorFlow loads here (the callback would load it anyway)."""
    if backend == "tensorflow":
        return True
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        return False
    return True
