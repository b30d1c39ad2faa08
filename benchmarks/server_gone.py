"""How long a fit's end waits when the tracking server is gone, with MLflow's default HTTP retries.

    python benchmarks/server_gone.py [--epochs 6] [--stop-after 1]

Starts a local `mlflow server`, fits a small digits model with MLflowCallback (everything on, the
callback owns the run), stops the server after epoch --stop-after, and prints when training ended
and when `fit` returned: the difference is what the end of training waited for the server before
keeping the unsent calls for `python -m experiments.sync`. It takes minutes, as the user would wait.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import keras
import mlflow
from sklearn.datasets import load_digits

from plugins import MLflowCallback

# The tests' server helpers: tests/ is not installed, so a script beside it imports it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import free_port, start_mlflow_server, stop_mlflow_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--stop-after", type=int, default=1, help="stop the server after this epoch")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    x, y = load_digits(return_X_y=True)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = start_mlflow_server(Path(folder), port)
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        moments: dict[str, float] = {}
        stop = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: epoch == args.stop_after and stop_mlflow_server(server),
            on_train_end=lambda logs: moments.setdefault("training ended", time.perf_counter()),
        )
        started = time.perf_counter()
        try:
            model.fit(
                x / 16,
                y,
                validation_split=0.2,
                epochs=args.epochs,
                verbose=0,
                callbacks=[stop, MLflowCallback(output_dir=Path(folder) / "out")],
            )
        finally:
            stop_mlflow_server(server)
        returned = time.perf_counter()
    if args.json:
        print(
            json.dumps(
                {
                    "epochs": args.epochs,
                    "stopped_after_epoch": args.stop_after,
                    "training_ended_s": moments["training ended"] - started,
                    "fit_returned_s": returned - started,
                }
            )
        )
        return
    print(
        f"{args.epochs} epochs, server stopped after epoch {args.stop_after}: training ended after "
        f"{moments['training ended'] - started:.1f} s, fit returned after {returned - started:.1f} s "
        f"(the end waited {returned - moments['training ended']:.1f} s)"
    )


if __name__ == "__main__":
    main()
