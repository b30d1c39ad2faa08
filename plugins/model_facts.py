"""What MLflowCallback reads from a Keras model: its params, its summary and its signature."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from plugins.params import flatten

log = logging.getLogger(__name__)


def model_params(model: keras.Model, fit: dict[str, Any]) -> dict[str, Any]:
    """Optimizer settings, model size and fit settings (Keras' ``callback.params``) as params; a
    setting that is None (not in use) is none."""
    optimizer = model.optimizer
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    params = {
        **optimizer_settings(optimizer),
        "optimizer.class": type(optimizer).__name__,
        "model.total_params": model.count_params(),
        "model.trainable_params": trainable,
        **fit_params(fit),
    }
    return {key: value for key, value in params.items() if value is not None}


def fit_params(fit: dict[str, Any]) -> dict[str, Any]:
    """What Keras' ``callback.params`` say of the fit (known for any model, built or not)."""
    params = {"fit.epochs": fit.get("epochs"), "fit.steps_per_epoch": fit.get("steps")}
    return {key: value for key, value in params.items() if value is not None}


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


def signature(model: keras.Model) -> ModelSignature | None:
    """Each input and output tensor with its own dtype and shape, read from the model's graph (no
    predict); named when there are several. None for a subclassed model, which has no graph."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        return None
    output_names = getattr(model, "output_names", None) or [tensor.name for tensor in outputs]
    return ModelSignature(
        inputs=_tensor_schema(inputs, [tensor.name for tensor in inputs]), outputs=_tensor_schema(outputs, output_names)
    )


def _tensor_schema(tensors: list, names: list[str]) -> Schema:
    several = len(tensors) > 1
    return Schema(
        [
            TensorSpec(
                _numpy_dtype(tensor.dtype),
                (-1, *(-1 if size is None else size for size in tensor.shape[1:])),
                name if several else None,
            )
            for tensor, name in zip(tensors, names)
        ]
    )


def _numpy_dtype(keras_dtype: str) -> np.dtype:
    # A text model's input: Keras says "string", NumPy holds TensorFlow's strings as objects (bytes).
    return np.dtype(object) if keras_dtype == "string" else np.dtype(keras_dtype)


def tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__
