"""What tracking costs as the model grows: untracked against tracked fits of dense models of 0.5M,
4M and 16M parameters, side by side in one process.

    python benchmarks/model_size.py [--sizes 0.5,4,16] [--repeats 2] [--epochs 6] [--json]

Each size is a dense classifier (3 hidden layers of one width, 1,024 inputs, 10 classes) fitted on
2,048 random examples (validation: 256) with the callback's defaults, tracked and untracked fits
alternating (rotated each repeat). Per size it prints the median whole fit, a later epoch (the median
of the epochs after the first), the end of training (after the last epoch, until fit returns) and
the bytes one tracked run stores (its artifacts and its logged model's), with one ``model.save`` of
the same model timed in the same process, and its file's size, as the reference.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import keras
import mlflow
import numpy as np

from plugins import MLflowCallback

INPUTS, CLASSES, LAYERS = 1024, 10, 3
EXAMPLES, VALIDATION, BATCH = 2048, 256, 256


def width_for(parameters: float) -> int:
    """The hidden width whose model has about ``parameters`` weights: (I+1)W + (L-1)(W+1)W + (W+1)C."""
    a, b, c = LAYERS - 1, INPUTS + 1 + (LAYERS - 1) + CLASSES, CLASSES - parameters
    return max(int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)), 8)


def dense_model(width: int) -> keras.Model:
    layers = [keras.layers.Dense(width, activation="relu") for _ in range(LAYERS)]
    model = keras.Sequential([keras.Input((INPUTS,)), *layers, keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Timeline(keras.callbacks.Callback):
    """First in the list: when each epoch starts and when the epochs are over."""

    def on_train_begin(self, logs=None):
        self.starts: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.at = time.perf_counter()


class Fit(NamedTuple):
    total: float
    later_epoch: float  # the median epoch after the first
    end: float  # after the epochs, until fit returns
    stored: int  # bytes the run stored (0 untracked)


def folder_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def timed_fit(width: int, data, epochs: int, tracked: bool, store: Path) -> Fit:
    keras.utils.set_random_seed(0)
    model = dense_model(width)
    callbacks = []
    artifacts = store / f"artifacts-{time.monotonic_ns()}"
    if tracked:
        mlflow.create_experiment(artifacts.name, artifact_location=artifacts.as_uri())  # its own folder: its bytes
        callbacks = [MLflowCallback(experiment_name=artifacts.name, run_name=f"dense-{width}")]
    timeline = Timeline()
    gc.collect()
    started = time.perf_counter()
    (x, y), validation = data
    model.fit(
        x, y, batch_size=BATCH, validation_data=validation, epochs=epochs, callbacks=[timeline, *callbacks], verbose=0
    )
    finished = time.perf_counter()
    bounds = [*timeline.starts[1:], timeline.at]
    later = statistics.median(end - start for start, end in zip(bounds, bounds[1:]))
    stored = folder_bytes(artifacts) if tracked else 0
    return Fit(finished - started, later, finished - timeline.at, stored)


def timed_save(width: int, data, store: Path, repeats: int) -> tuple[float, int]:
    """The median seconds of one model.save of the same model, trained a step so that its file holds
    the optimizer's state as the run's does, and its file's bytes."""
    model = dense_model(width)
    (x, y), _ = data
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)
    times, path = [], store / "reference.keras"
    for _ in range(repeats):
        started = time.perf_counter()
        model.save(path)
        times.append(time.perf_counter() - started)
    return statistics.median(times), path.stat().st_size


def measure(size: float, repeats: int, epochs: int, store: Path) -> dict:
    width = width_for(size * 1e6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES + VALIDATION, INPUTS)).astype("float32")
    y = rng.integers(0, CLASSES, size=EXAMPLES + VALIDATION)
    data = ((x[:EXAMPLES], y[:EXAMPLES]), (x[EXAMPLES:], y[EXAMPLES:]))
    timed_fit(width, data, 2, False, store)  # warm-up: graph tracing
    fits: dict[bool, list[Fit]] = {False: [], True: []}
    for repeat in range(repeats):
        for tracked in (False, True) if repeat % 2 == 0 else (True, False):
            fits[tracked].append(timed_fit(width, data, epochs, tracked, store))
            print(f"  {size}M repeat {repeat + 1}: tracked={tracked}: {fits[tracked][-1].total:.2f} s", file=sys.stderr)
    save_s, save_bytes = timed_save(width, data, store, max(repeats, 2))
    row = {"size_m": size, "parameters": dense_model(width).count_params(), "save_s": save_s, "save_bytes": save_bytes}
    for tracked, name in ((False, "untracked"), (True, "tracked")):
        samples = fits[tracked]
        row[name] = {
            "fit_s": statistics.median(f.total for f in samples),
            "later_epoch_s": statistics.median(f.later_epoch for f in samples),
            "end_s": statistics.median(f.end for f in samples),
            "stored_bytes": statistics.median(f.stored for f in samples),
        }
    plain, tracked = row["untracked"], row["tracked"]
    row["fit_ratio"] = tracked["fit_s"] / plain["fit_s"]
    row["fit_ratios"] = [t.total / u.total for t, u in zip(fits[True], fits[False])]
    row["later_epoch_ratio"] = tracked["later_epoch_s"] / plain["later_epoch_s"]
    row["end_in_saves"] = tracked["end_s"] / save_s
    row["stored_in_model_files"] = tracked["stored_bytes"] / save_bytes
    return row


def print_table(rows: list[dict], epochs: int, repeats: int) -> None:
    print(f"dense models, {epochs} epochs of {EXAMPLES} examples, median of {repeats} alternating fits each")
    print(
        f"{'params':>10} {'fit ratio (each)':>26} {'later epoch s (ratio)':>24} {'end s (in saves)':>20}"
        f" {'one save s':>11} {'stored MB (in model files)':>27}"
    )
    for row in rows:
        each = ", ".join(f"{ratio:.2f}" for ratio in row["fit_ratios"])
        later = f"{row['tracked']['later_epoch_s']:.3f} (x{row['later_epoch_ratio']:.3f})"
        end = f"{row['tracked']['end_s']:.2f} (x{row['end_in_saves']:.2f})"
        stored = f"{row['tracked']['stored_bytes'] / 1e6:.0f} (x{row['stored_in_model_files']:.2f})"
        fit = f"x{row['fit_ratio']:.3f} ({each})"
        print(f"{row['parameters'] / 1e6:>9.1f}M {fit:>26} {later:>24} {end:>20} {row['save_s']:>11.2f} {stored:>27}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5,4,16", help="millions of parameters, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs: expected 3 or more (a later epoch is one after the first)")
    sizes = [float(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        rows = [measure(size, args.repeats, args.epochs, Path(folder)) for size in sizes]
    if args.json:
        print(json.dumps({"epochs": args.epochs, "repeats": args.repeats, "sizes": rows}, indent=2))
    else:
        print_table(rows, args.epochs, args.repeats)


if __name__ == "__main__":
    main()
