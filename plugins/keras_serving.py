"""How ``mlflow.pyfunc`` serves a model the tracker logged (``model/``): MLflow's own Keras pyfunc
turns every prediction into one NumPy array, so it cannot serve a model with several outputs, and
it hands text to Keras as NumPy objects, which Keras refuses. This one does both: each output by
its name, text as TensorFlow strings.

A copy of this file travels in each logged model (``code/keras_serving.py``) and MLflow imports it
when the model is loaded, where this project may not be installed: it imports nothing of ours.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

MODULE = "keras_serving"


def serve_with_own_pyfunc(model_dir: Path) -> None:
    """Point the python_function flavour of an MLflow Model that ``mlflow.keras.save_model`` wrote
    at this module, copied into the model's ``code/``; its ``keras`` flavour stays MLflow's."""
    from mlflow.models import Model
    from mlflow.pyfunc import CODE, DATA, MAIN

    (model_dir / "code").mkdir(exist_ok=True)
    shutil.copyfile(__file__, model_dir / "code" / f"{MODULE}.py")
    description = Model.load(model_dir / "MLmodel")
    description.flavors["python_function"].update({MAIN: MODULE, CODE: "code", DATA: "data"})
    description.save(model_dir / "MLmodel")


def _load_pyfunc(data_path: str) -> KerasServing:
    """MLflow's entry point: ``data_path`` is the model's ``data/`` folder, which holds ``model.keras``."""
    return KerasServing(keras.saving.load_model(os.path.join(data_path, "model.keras")))


class KerasServing:
    def __init__(self, model: keras.Model):
        self.model = model

    def get_raw_model(self) -> keras.Model:
        return self.model

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """One input: an array or a one-column frame of it; several: a mapping by input name (or a
        list in their order). Several outputs come back as a mapping by output name."""
        predictions = self.model.predict(self._inputs(data), verbose=0)
        if isinstance(predictions, dict):
            return {name: np.asarray(value) for name, value in predictions.items()}
        if isinstance(predictions, (list, tuple)):
            return {name: np.asarray(value) for name, value in zip(self.model.output_names, predictions)}
        if isinstance(data, pd.DataFrame) and predictions.ndim == 2:
            return pd.DataFrame(predictions, index=data.index)
        return predictions

    def _inputs(self, data: Any) -> Any:
        if isinstance(data, pd.DataFrame):
            return _tensor(data.to_numpy())
        if isinstance(data, dict):
            return {name: _tensor(value) for name, value in data.items()}
        if isinstance(data, (list, tuple)) and len(getattr(self.model, "inputs", None) or ()) > 1:
            return [_tensor(value) for value in data]
        return _tensor(data)


def _tensor(value: Any) -> Any:
    """Text as a TensorFlow string tensor (Keras takes no NumPy objects); numbers as they are."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        import tensorflow as tf

        return tf.constant(array.astype(object))
    return array
