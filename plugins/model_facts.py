"""What MLflowCallback reads from a Keras model: its params, its summary and its signature."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from plugins.params import flatten
from plugins.provenance import BACKEND_PACKAGES

log = logging.getLogger(__name__)


def model_params(model: keras.Model, fit: dict[str, Any]) -> dict[str, Any]:
    """Optimizer settings, model size and fit settings (Keras' ``callback.params``) as params."""
    optimizer = model.optimizer
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return {
        **optimizer_settings(optimizer),
        "optimizer.class": type(optimizer).__name__,
        "model.total_params": model.count_params(),
        "model.trainable_params": trainable,
        **fit_params(fit),
    }


def fit_params(fit: dict[str, Any]) -> dict[str, Any]:
    """What Keras' ``callback.params`` say of the fit (known for any model, built or not), and the
    backend it ran on (provenance: the same model trains differently on another)."""
    name, version = backend()
    return {
        "fit.epochs": fit.get("epochs"),
        "fit.steps_per_epoch": fit.get("steps"),
        "keras.version": keras.__version__,
        "keras.backend": name,
        "keras.backend_version": version,
    }


def optimizer_settings(optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """The optimizer's config as ``optimizer.*`` params. Keras cannot serialize a custom
    LearningRateSchedule without get_config: then the schedule's class stands for the config."""
    try:
        return flatten(optimizer.get_config(), prefix="optimizer.")
    except NotImplementedError as error:
        rate = getattr(optimizer, "_learning_rate", None)
        log.warning("optimizer params: only its class and learning-rate schedule are logged (%s)", error)
        return {"optimizer.learning_rate": type(rate).__name__}


def model_summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines)


def signature(model: keras.Model, input_example: Any = None) -> ModelSignature | None:
    """Each input and output tensor with its own dtype and shape, read from the model's graph (no
    predict); named when there are several. An input's dtype is the input example's where one is
    given (token ids declared ``float32`` but fed as integers are served as integers). None for a
    subclassed model, which has no graph."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        return None
    input_names = [tensor.name for tensor in inputs]
    output_names = getattr(model, "output_names", None) or [tensor.name for tensor in outputs]
    return ModelSignature(
        inputs=_tensor_schema(inputs, input_names, _example_dtypes(input_example, input_names)),
        outputs=_tensor_schema(outputs, output_names),
    )


def _example_dtypes(example: Any, names: list[str]) -> list[np.dtype | None]:
    """The dtype of each input in an input example: one array, a list in the inputs' order, or a
    mapping by input name; None where the example says nothing."""
    if isinstance(example, np.ndarray) and len(names) == 1:
        return [example.dtype]
    if isinstance(example, (list, tuple)) and len(example) == len(names):
        return [np.asarray(part).dtype for part in example]
    if isinstance(example, Mapping):
        return [np.asarray(example[name]).dtype if name in example else None for name in names]
    return [None] * len(names)


def _tensor_schema(tensors: list, names: list[str], dtypes: list | None = None) -> Schema:
    several = len(tensors) > 1
    return Schema(
        [
            TensorSpec(
                dtype if dtype is not None else _numpy_dtype(tensor.dtype),
                (-1, *(-1 if size is None else size for size in tensor.shape[1:])),
                name if several else None,
            )
            for tensor, name, dtype in zip(tensors, names, dtypes or [None] * len(tensors))
        ]
    )


def _numpy_dtype(keras_dtype: str) -> np.dtype:
    # A text model's input: Keras says "string", NumPy holds TensorFlow's strings as objects (bytes).
    return np.dtype(object) if keras_dtype == "string" else np.dtype(keras_dtype)


def backend() -> tuple[str, str]:
    """(the Keras backend in use, its package's version), e.g. ``("jax", "0.10.2")``."""
    name = keras.backend.backend()
    packages = BACKEND_PACKAGES.get(name, (name,))
    return name, (package_version(packages[0]) if packages else np.__version__) or "unknown"


def package_version(package: str) -> str | None:
    """A package's version: the loaded module's (the backend in use is loaded), else the installed
    distribution's, without importing it; None where neither says (``tensorflow-cpu`` has no
    ``tensorflow`` distribution, but its module says)."""
    from importlib.metadata import PackageNotFoundError, version

    loaded = getattr(sys.modules.get(package), "__version__", None)
    if isinstance(loaded, str):
        return loaded
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def pip_requirements() -> list[str]:
    """Keras and the packages of the backend this process runs on, pinned: a model/ trained on JAX
    names jax, not a TensorFlow that happens to be installed, and needs no TensorFlow at all."""
    packages = BACKEND_PACKAGES.get(keras.backend.backend(), ())
    pinned = {package: package_version(package) for package in packages}
    # Without a local label: PyTorch's CPU build says 2.13.0+cpu, which no package index serves by that name.
    return [
        f"keras=={keras.__version__}",
        *(f"{name}=={found.split('+')[0]}" for name, found in pinned.items() if found),
    ]
