"""The runner's two input pipelines on one backend: tf.data against NumPy batches (a seeded
keras.utils.PyDataset), side by side in one process.

    python benchmarks/input_pipeline.py [--repeats 3] [--epochs 8] [--backend tensorflow|jax|torch] [--json]

Fits the digits CNN of conf/ (model=cnn reg=none), untracked, for --epochs epochs with each pipeline,
alternating (rotated each repeat), and prints the median whole fit, the median later epoch (after
the first, which traces the model) and each one's ratio to tf.data. The runner takes tf.data on
TensorFlow and the NumPy batches on JAX and PyTorch (experiments/training.py): on those backends
tf.data needs TensorFlow installed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import keras
from hydra import compose, initialize_config_dir

from experiments.batches import Batches
from experiments.data import load_splits, make_pipeline, steps_per_epoch
from experiments.training import build_model

CONF = Path(__file__).resolve().parent.parent / "conf"
PIPELINES = ("tf.data", "NumPy batches")


class EpochStarts(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.starts: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.starts.append(time.perf_counter())


def timed_fit(cfg, splits, pipeline: str) -> tuple[float, float]:
    """(whole fit, median later epoch) in seconds, of a new model on ``pipeline``."""
    keras.utils.set_random_seed(0)
    batch, steps = cfg.trainer.batch_size, steps_per_epoch(splits.train, cfg.trainer.batch_size)
    model = build_model(cfg, splits, steps_per_epoch=steps)
    if pipeline == "tf.data":
        train, val = make_pipeline(splits.train, batch, shuffle_seed=0), make_pipeline(splits.val, batch)
        fit_steps = steps
    else:
        train, val, fit_steps = Batches(splits.train, batch, shuffle_seed=0), Batches(splits.val, batch), None
    epochs = EpochStarts()
    started = time.perf_counter()
    model.fit(
        train, validation_data=val, epochs=cfg.trainer.epochs, steps_per_epoch=fit_steps, verbose=0, callbacks=[epochs]
    )
    whole = time.perf_counter() - started
    later = [end - start for start, end in zip(epochs.starts[1:], epochs.starts[2:])]
    return whole, statistics.median(later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), help="default: KERAS_BACKEND")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs: expected 3 or more (the first epoch traces the model; later ones are compared)")
    if args.backend and args.backend != keras.backend.backend():
        # Keras picks its backend once, at import: this script again, with that backend.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "KERAS_BACKEND": args.backend})
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=cnn", "reg=none", f"trainer.epochs={args.epochs}"])
    splits = load_splits(cfg.data, seed=cfg.trainer.seed)
    timed_fit(cfg, splits, PIPELINES[0])  # warm-up: tracing, caches
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in PIPELINES}
    for repeat in range(args.repeats):
        for name in PIPELINES[repeat % 2 :] + PIPELINES[: repeat % 2]:
            times[name].append(timed_fit(cfg, splits, name))
            print(f"  repeat {repeat + 1}: {name}: {times[name][-1][0]:.2f} s", file=sys.stderr, flush=True)
    rows = summarise(times)
    if args.json:
        print(json.dumps({"backend": keras.backend.backend(), "epochs": args.epochs, "pipelines": rows}, indent=2))
        return
    print(f"digits CNN on {keras.backend.backend()}, {args.epochs} epochs, median of {args.repeats} alternating fits")
    for row in rows:
        print(
            f"{row['pipeline']:<14} fit {row['fit_s']:6.2f} s  x{row['fit_ratio']:.3f}"
            f"   later epoch {row['later_epoch_ms']:7.1f} ms  x{row['later_epoch_ratio']:.3f}"
        )


def summarise(times: dict[str, list[tuple[float, float]]]) -> list[dict]:
    base_fit = statistics.median(whole for whole, _ in times[PIPELINES[0]])
    base_epoch = statistics.median(later for _, later in times[PIPELINES[0]])
    rows = []
    for name, samples in times.items():
        fit_s, later_s = statistics.median(w for w, _ in samples), statistics.median(e for _, e in samples)
        rows.append(
            {
                "pipeline": name,
                "fit_s": fit_s,
                "fit_ratio": fit_s / base_fit,
                "later_epoch_ms": later_s * 1000,
                "later_epoch_ratio": later_s / base_epoch,
            }
        )
    return rows


if __name__ == "__main__":
    main()
