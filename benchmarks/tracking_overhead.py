"""Training time with and without tracking, measured side by side in one process.

    python benchmarks/tracking_overhead.py [--repeats 5] [--epochs 15] [--setups none,callback,...]
        [--backend tensorflow|jax|torch] [--json]

Fits the digits CNN of conf/ (model=cnn reg=none) for --epochs epochs under each setup, in
alternating order (rotated each repeat, so no setup always runs first), and prints the median wall
time of each and its ratio to no tracking. Tracked setups are timed from run start to run end, so
end-of-training uploads count. Each time is also split where training ends (the first callback's
on_train_end): the epochs, and the end of training (saving models, drawing plots, uploads, ending
the run). The epochs are split too: the start of training with the first epoch, and the median time
of an epoch after the first. The end's last part, from the last
callback's on_train_end to fit's return (Keras releasing the fit's data iterator), is counted on its
own: how many fits it took more than 20 ms. Each fit starts after a full garbage collection.
On JAX and PyTorch (``--backend``) the data comes as the runner's NumPy batches, not tf.data.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import keras
import mlflow
from hydra import compose, initialize_config_dir

from experiments.batches import Batches
from experiments.data import load_splits, make_pipeline, steps_per_epoch
from experiments.tracked_run import training_sample
from experiments.training import build_model
from plugins import MLflowCallback

CONF = Path(__file__).resolve().parent.parent / "conf"


def setups(checkpoint_dir: Path, sample: tuple | None = None) -> dict:
    """key -> (name, callbacks factory, wrap in an active run?, autolog?); ``sample``: the runner's
    training sample for the diagnostics."""
    return {
        "none": ("no tracking", lambda: [], False, False),
        "callback": ("MLflowCallback (everything on)", lambda: [MLflowCallback()], False, False),
        "diagnostics": (
            "MLflowCallback diagnostics=True",
            lambda: [MLflowCallback(diagnostics=True, diagnostics_data=sample)],
            False,
            False,
        ),
        "each-epoch": (
            "MLflowCallback metrics_interval_s=0",
            lambda: [MLflowCallback(metrics_interval_s=0)],
            False,
            False,
        ),
        "per-batch": (
            "MLflowCallback log_every_n_steps=1",
            lambda: [MLflowCallback(log_every_n_steps=1)],
            False,
            False,
        ),
        "mlflow-callback": ("mlflow.keras.MlflowCallback", lambda: [mlflow.keras.MlflowCallback()], True, False),
        "autolog": ("mlflow.tensorflow.autolog()", lambda: [], True, True),
        "checkpoint": (
            "keras ModelCheckpoint(save_best_only)",
            lambda: [keras.callbacks.ModelCheckpoint(str(checkpoint_dir / "best.keras"), save_best_only=True)],
            False,
            False,
        ),
    }


class Timeline(keras.callbacks.Callback):
    """First in the list: notes when each epoch starts and when the epochs are over, before any
    callback's work for that moment, so an epoch's time holds every callback's per-epoch work."""

    def on_train_begin(self, logs=None):
        self.epoch_starts: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.at = time.perf_counter()

    def later_epochs(self) -> list[float]:
        """Seconds of each epoch after the first (the first traces the new model's graph)."""
        bounds = [*self.epoch_starts[1:], self.at]
        return [end - start for start, end in zip(bounds, bounds[1:])]


class CallbacksDone(keras.callbacks.Callback):
    """Last in the list: notes when every callback's on_train_end is over."""

    def on_train_end(self, logs=None):
        self.at = time.perf_counter()


class FitTimes(NamedTuple):
    total: float  # seconds of the whole fit
    first: float  # seconds of it before the second epoch: the start of training and the first epoch
    end: float  # seconds of it after the epochs: the end of training
    later_epochs: list[float]  # seconds of each epoch after the first
    after_callbacks: float  # seconds of the end after the last callback's on_train_end, in Keras


def timed_fit(cfg, splits, data, callbacks, in_run: bool, autolog: bool) -> FitTimes:
    """Fit a new digits CNN with ``callbacks`` (in a run of its own if ``in_run``) and time it."""
    keras.utils.set_random_seed(0)
    steps = steps_per_epoch(splits.train, cfg.trainer.batch_size)
    model = build_model(cfg, splits, steps_per_epoch=steps)
    if autolog:
        mlflow.tensorflow.autolog(silent=True)
    timeline, done = Timeline(), CallbacksDone()
    # A full collection of the TensorFlow-sized heap takes about 0.3 s. Started clean, each fit pays
    # for its own garbage only, not for what an earlier fit (of another setup) left to collect.
    gc.collect()
    started = time.perf_counter()
    # shuffle=False: the pipeline shuffles (seeded), as in experiments.train; Keras warns otherwise.
    fit = dict(
        validation_data=data[1],
        epochs=cfg.trainer.epochs,
        callbacks=[timeline, *callbacks, done],
        verbose=0,
        shuffle=False,
    )
    # autolog() predicts with progress bars to infer a signature: kept off stdout, where the table goes.
    with contextlib.redirect_stdout(sys.stderr), mlflow.start_run() if in_run else contextlib.nullcontext():
        model.fit(data[0], **fit)
    finished = time.perf_counter()
    if autolog:
        mlflow.tensorflow.autolog(disable=True)
    return FitTimes(
        finished - started,
        timeline.epoch_starts[1] - started,
        finished - timeline.at,
        timeline.later_epochs(),
        finished - done.at,
    )


def prepared_data(epochs: int, autotune: bool = True):
    """The config, splits and (train, validation) pipelines of the digits CNN fit that is timed;
    ``autotune=False`` turns tf.data's autotuning off in both."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=cnn", "reg=none", f"trainer.epochs={epochs}"])
    splits = load_splits(cfg.data, seed=cfg.trainer.seed)
    if keras.backend.backend() != "tensorflow":
        return cfg, splits, (Batches(splits.train, cfg.trainer.batch_size, 0), Batches(splits.val, 32))
    steps = steps_per_epoch(splits.train, cfg.trainer.batch_size)
    # One finite pass per epoch: autolog() records the training data set and would never finish an infinite one.
    train = make_pipeline(splits.train, cfg.trainer.batch_size, shuffle_seed=0).take(steps)
    validation = make_pipeline(splits.val, cfg.trainer.batch_size)
    if not autotune:
        import tensorflow as tf

        options = tf.data.Options()
        options.autotune.enabled = False
        train, validation = train.with_options(options), validation.with_options(options)
    return cfg, splits, (train, validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--setups",
        default=None,
        help="which to time, comma-separated; no tracking (none) is always timed "
        "(default: all; autolog on TensorFlow only)",
    )
    parser.add_argument(
        "--no-tf-data-autotune",
        action="store_true",
        help="turn tf.data's autotuning off in the timed pipelines (see the last column)",
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        help="the Keras backend to time on (default: Keras' own choice, KERAS_BACKEND)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args()
    if args.setups is None:
        args.setups = ",".join(
            key
            for key in setups(Path())
            if key != "autolog" or (args.backend or keras.backend.backend()) == "tensorflow"
        )
    if args.backend and args.backend != keras.backend.backend():
        # Keras picks its backend once, at import: this script again, with that backend.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "KERAS_BACKEND": args.backend})
    if keras.backend.backend() != "tensorflow" and (
        {"autolog"} & set(args.setups.split(",")) or args.no_tf_data_autotune
    ):
        parser.error("--setups autolog and --no-tf-data-autotune: TensorFlow only (mlflow.tensorflow, tf.data)")
    if args.epochs < 2:
        parser.error("--epochs: expected 2 or more (the first epoch traces the graph; the table shows a later one)")
    chosen = ["none", *(key for key in args.setups.split(",") if key != "none")]
    unknown = [key for key in chosen if key not in setups(Path())]
    if unknown:
        parser.error(f"--setups: unknown {', '.join(unknown)}; expected some of {', '.join(setups(Path()))}")
    cfg, splits, data = prepared_data(args.epochs, autotune=not args.no_tf_data_autotune)
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        mlflow.set_experiment("tracking-overhead")
        known = setups(Path(folder), training_sample(splits))
        timed_fit(cfg, splits, data, [], False, False)  # warm-up: graph tracing, caches
        fits: dict[str, list[FitTimes]] = {known[key][0]: [] for key in chosen}
        for repeat in range(args.repeats):
            for name, callbacks, in_run, autolog in (known[key] for key in rotated(chosen, repeat)):
                fits[name].append(timed_fit(cfg, splits, data, callbacks(), in_run, autolog))
                print(f"  repeat {repeat + 1}: {name}: {fits[name][-1].total:.2f} s", file=sys.stderr, flush=True)
    rows = summarise(fits)
    if args.json:
        figures = {"backend": keras.backend.backend(), "epochs": args.epochs, "repeats": args.repeats, "setups": rows}
        print(json.dumps(figures, indent=2))
    else:
        print_table(rows, args)


def rotated(keys: list[str], repeat: int) -> list[str]:
    """The setups in this repeat's order: each starts a round as often as the others."""
    shift = repeat % len(keys)
    return keys[shift:] + keys[:shift]


def summarise(fits: dict[str, list[FitTimes]]) -> list[dict]:
    """One row per setup: median time and its ratio to no tracking; the ratios within each repeat
    (median, range, and a 95% interval of that median) show the noise; the epochs' ratio, the start
    with the first epoch, a later epoch and the end of training show where the time goes. A later
    epoch's median pools every repeat's epochs, so it is the steadiest figure here. The last figures
    count the fits whose end held a slow release of the data iterator, and its longest."""
    baseline = fits["no tracking"]
    total_baseline = statistics.median(fit.total for fit in baseline)
    epochs_baseline = statistics.median(fit.total - fit.end for fit in baseline)
    rows = []
    for name, samples in fits.items():
        total = statistics.median(fit.total for fit in samples)
        paired = [fit.total / base.total for fit, base in zip(samples, baseline)]
        low, high = median_interval(paired)
        slow = [fit.after_callbacks for fit in samples if fit.after_callbacks > 0.020]
        rows.append(
            {
                "setup": name,
                "median_s": total,
                "ratio": total / total_baseline,
                "repeat_ratio_median": statistics.median(paired),
                "repeat_ratio_min": min(paired),
                "repeat_ratio_max": max(paired),
                "repeat_ratio_interval": [low, high],
                "epochs_ratio": statistics.median(fit.total - fit.end for fit in samples) / epochs_baseline,
                "start_and_first_epoch_ms": statistics.median(fit.first for fit in samples) * 1000,
                "later_epoch_ms": statistics.median(epoch for fit in samples for epoch in fit.later_epochs) * 1000,
                "end_of_training_s": statistics.median(fit.end for fit in samples),
                "slow_releases": len(slow),
                "slow_release_max_ms": max(slow) * 1000 if slow else None,
                "fits": len(samples),
            }
        )
    return rows


def print_table(rows: list[dict], args) -> None:
    """The rows as fixed-width columns, each ms figure with its difference to no tracking."""
    base = rows[0]
    print(
        f"digits CNN on {keras.backend.backend()}, {args.epochs} epochs, median of {args.repeats} alternating runs each"
        + (", tf.data autotuning off" if args.no_tf_data_autotune else "")
    )
    print(
        f"{'setup':<40} {'median s':>9} {'ratio':>7}   {'per repeat: median, min..max, 95% interval':>42}"
        f" {'epochs ratio':>13} {'start and first epoch ms (+ms)':>31} {'later epoch ms (+ms)':>21}"
        f" {'end of training s':>18} {'after callbacks > 20 ms':>24}"
    )
    for row in rows:
        low, high = row["repeat_ratio_interval"]
        spread = (
            f"{row['repeat_ratio_median']:.3f}, {row['repeat_ratio_min']:.2f}..{row['repeat_ratio_max']:.2f},"
            f" {low:.3f}..{high:.3f}"
        )
        first = _with_change(row["start_and_first_epoch_ms"], base["start_and_first_epoch_ms"])
        later = _with_change(row["later_epoch_ms"], base["later_epoch_ms"])
        releases = f"{row['slow_releases']} of {row['fits']}"
        if row["slow_releases"]:
            releases += f" (max {row['slow_release_max_ms']:.0f} ms)"
        print(
            f"{row['setup']:<40} {row['median_s']:>9.2f} {row['ratio']:>7.3f}   {spread:>42}"
            f" {row['epochs_ratio']:>13.3f} {first:>31} {later:>21} {row['end_of_training_s']:>18.3f}"
            f" {releases:>24}"
        )


def median_interval(samples: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the median of ``samples``: where the median of the paired ratios
    could lie given the noise between repeats, so a target is judged by more than one median."""
    draw = random.Random(seed)
    medians = sorted(statistics.median(draw.choices(samples, k=len(samples))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def _with_change(ms: float, baseline_ms: float) -> str:
    """``ms`` with its difference to the untracked fits' figure."""
    return f"{ms:.1f} ({ms - baseline_ms:+.1f})"


if __name__ == "__main__":
    main()
