"""Training time with and without tracking, measured side by side in one process.

    python benchmarks/tracking_overhead.py [--repeats 5] [--epochs 15] [--setups none,callback,...]

Fits the digits CNN of conf/ (model=cnn reg=none) for --epochs epochs under each setup, in
alternating order, and prints the median wall time of each and its ratio to no tracking. Tracked
setups are timed from run start to run end, so end-of-training uploads count. Each time is also
split where training ends (the first callback's on_train_end): the epochs, and the end of training
(saving models, drawing plots, uploads, ending the run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import mlflow
from hydra import compose, initialize_config_dir

from experiments.data import load_splits, make_pipeline, steps_per_epoch
from experiments.train import build_model
from plugins import MLflowCallback

CONF = Path(__file__).resolve().parent.parent / "conf"


def setups(checkpoint_dir: Path) -> dict:
    """key -> (name, callbacks factory, wrap in an active run?, autolog?)"""
    return {
        "none": ("no tracking", lambda: [], False, False),
        "callback": ("MLflowCallback (everything on)", lambda: [MLflowCallback()], False, False),
        "per-batch": ("MLflowCallback log_every_n_steps=1", lambda: [MLflowCallback(log_every_n_steps=1)], False, False),
        "mlflow-callback": ("mlflow.keras.MlflowCallback", lambda: [mlflow.keras.MlflowCallback()], True, False),
        "autolog": ("mlflow.tensorflow.autolog()", lambda: [], True, True),
        "checkpoint": ("keras ModelCheckpoint(save_best_only)",
                       lambda: [keras.callbacks.ModelCheckpoint(str(checkpoint_dir / "best.keras"), save_best_only=True)],
                       False, False),
    }


class TrainingEnd(keras.callbacks.Callback):
    """First in the list: notes when the epochs are over, before any callback's end-of-training work."""

    def on_train_end(self, logs=None):
        self.at = time.perf_counter()


def timed_fit(cfg, splits, data, callbacks, in_run: bool, autolog: bool) -> tuple[float, float]:
    """(seconds of the whole fit, seconds of it after the epochs: the end of training)."""
    keras.utils.set_random_seed(0)
    steps = steps_per_epoch(splits.train, cfg.trainer.batch_size)
    model = build_model(cfg, splits, steps_per_epoch=steps)
    if autolog:
        mlflow.tensorflow.autolog(silent=True)
    training_end = TrainingEnd()
    started = time.perf_counter()
    fit = dict(validation_data=data[1], epochs=cfg.trainer.epochs, callbacks=[training_end, *callbacks], verbose=0)
    # autolog() predicts with progress bars to infer a signature: kept off stdout, where the table goes.
    with contextlib.redirect_stdout(sys.stderr), (mlflow.start_run() if in_run else contextlib.nullcontext()):
        model.fit(data[0], **fit)
    finished = time.perf_counter()
    if autolog:
        mlflow.tensorflow.autolog(disable=True)
    return finished - started, finished - training_end.at


def prepared_data(epochs: int):
    """The config, splits and (train, validation) pipelines of the digits CNN fit that is timed."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=cnn", "reg=none", f"trainer.epochs={epochs}"])
    splits = load_splits(cfg.data, seed=cfg.trainer.seed)
    steps = steps_per_epoch(splits.train, cfg.trainer.batch_size)
    # One finite pass per epoch: autolog() records the training data set and would never finish an infinite one.
    train = make_pipeline(splits.train, cfg.trainer.batch_size, shuffle_seed=0).take(steps)
    return cfg, splits, (train, make_pipeline(splits.val, cfg.trainer.batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--setups", default="none,callback,per-batch,mlflow-callback,autolog,checkpoint",
                        help="which to time, comma-separated; no tracking (none) is always timed")
    args = parser.parse_args()
    chosen = ["none", *(key for key in args.setups.split(",") if key != "none")]
    unknown = [key for key in chosen if key not in setups(Path())]
    if unknown:
        parser.error(f"--setups: unknown {', '.join(unknown)}; expected some of {', '.join(setups(Path()))}")
    cfg, splits, data = prepared_data(args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        mlflow.set_experiment("tracking-overhead")
        known = setups(Path(folder))
        timed_fit(cfg, splits, data, [], False, False)  # warm-up: graph tracing, caches
        times: dict[str, list[float]] = {known[key][0]: [] for key in chosen}
        end_times: dict[str, list[float]] = {known[key][0]: [] for key in chosen}
        for repeat in range(args.repeats):
            for name, callbacks, in_run, autolog in (known[key] for key in chosen):
                total, end = timed_fit(cfg, splits, data, callbacks(), in_run, autolog)
                times[name].append(total)
                end_times[name].append(end)
                print(f"  repeat {repeat + 1}: {name}: {total:.2f} s", file=sys.stderr, flush=True)
    print_table(times, end_times, args)


def print_table(times: dict[str, list[float]], end_times: dict[str, list[float]], args) -> None:
    """Median time and its ratio to no tracking; the ratios within each repeat (median, range) show
    the noise; the epochs' ratio and the end of training show where the time goes."""
    baseline = times["no tracking"]
    epochs_baseline = statistics.median(t - e for t, e in zip(baseline, end_times["no tracking"]))
    print(f"digits CNN, {args.epochs} epochs, median of {args.repeats} alternating runs each")
    print(f"{'setup':<40} {'median s':>9} {'ratio':>7}   {'per repeat: median, min..max':>28}"
          f" {'epochs ratio':>13} {'end of training s':>18}")
    for name, samples in times.items():
        ratio = statistics.median(samples) / statistics.median(baseline)
        paired = [sample / base for sample, base in zip(samples, baseline)]
        spread = f"{statistics.median(paired):.3f}, {min(paired):.2f}..{max(paired):.2f}"
        epochs = statistics.median(t - e for t, e in zip(samples, end_times[name]))
        print(f"{name:<40} {statistics.median(samples):>9.2f} {ratio:>7.3f}   {spread:>28}"
              f" {epochs / epochs_baseline:>13.3f} {statistics.median(end_times[name]):>18.3f}")


if __name__ == "__main__":
    main()
