"""Reusable MLflow tracking pieces for Keras; usable without experiments/ and without Hydra."""

__all__ = ["MLflowCallback"]


def __getattr__(name: str):
    # Loaded on first use: Keras pulls in TensorFlow (seconds), which plugins.params and the
    # Hydra sweep callback do not need.
    if name == "MLflowCallback":
        from plugins.mlflow_callback import MLflowCallback

        return MLflowCallback
    raise AttributeError(f"module 'plugins' has no attribute {name!r}")
