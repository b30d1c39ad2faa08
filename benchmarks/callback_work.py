"""Where MLflowCallback's cost goes: the work it adds to a real fit, part by part.

    python benchmarks/callback_work.py [--repeats 5] [--epochs 15] [--json]

Fits the digits CNN of conf/ (model=cnn reg=none) with MLflowCallback (everything on) and records
the CPU time of each of its hooks on the training thread, of each job on its sender thread and of
the helper process that draws learning_curves.png; and, in wall time, what the end of training
waits for on the training thread: the helper's plot, then the sender (the model save and the
uploads, which run meanwhile), then the end of the run. Whichever wait is longer is the one to shorten.
Thread CPU time does not count the time other processes take from this machine, so these figures
are steadier than the side-by-side ratios of tracking_overhead.py and say what those ratios are
made of (waiting, e.g. for the GIL, is not counted). Prints the median per fit of each part and the total as a share of
the no-tracking fit time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections import defaultdict
from functools import wraps
from pathlib import Path

import mlflow
import numpy as np
from tensorflow.python.eager import context as tf_context
from tracking_overhead import prepared_data, timed_fit  # the script beside this one

from plugins import MLflowCallback, curves
from plugins.delivery import Delivery
from plugins.sender import Sender

HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_epoch_end", "on_train_end")
# The end of training on the training thread, in the order it waits: (label, object, attribute).
END_WAITS = (
    ("on_train_end, all of it", MLflowCallback, "on_train_end"),
    ("  waiting for the helper's learning_curves.png", curves, "plot_learning_curves"),
    ("  then waiting for the sender (model/, uploads)", Delivery, "flush_with_retries"),
    ("  then ending the run", MLflowCallback, "finish_run"),
)


class Ledger:
    """Seconds per part for the fit being measured."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)  # END_WAITS' parts

    def timed_wait(self, label, function):
        return _timed(function, time.perf_counter, self.wall, label)

    def timed_hook(self, name, hook):
        return _timed(hook, time.thread_time, self.seconds, f"hook {name}")

    def timed_job(self, attempt):
        @wraps(attempt)
        def timed(sender, what, *rest, **keywords):
            started = time.thread_time()
            try:
                return attempt(sender, what, *rest, **keywords)
            finally:
                self.seconds[f"sender {_part(what)}"] += time.thread_time() - started

        return timed

    def counted_helper(self, draw):
        """The helper process's own CPU time for the plot, which it reports in its answer."""

        @wraps(draw)
        def counted(*args, **kwargs):
            answer = draw(*args, **kwargs)
            self.seconds["helper process drawing learning_curves.png"] += answer.get("cpu_s", 0.0)
            return answer

        return counted


def _timed(function, clock, totals: dict[str, float], key: str):
    """``function``, adding the time it takes by ``clock`` to ``totals[key]``."""

    @wraps(function)
    def timed(*args, **kwargs):
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] += clock() - started

    return timed


def _part(what: str) -> str:
    """Every log_batch of metrics ('metrics of epochs 3-9', ..., the summary's) is one part; other jobs
    keep their names."""
    return "log_batch of metrics" if "metrics" in what else what


def keep_kernel_cache() -> None:
    """Make tf.random.set_seed (which keras.utils.set_random_seed calls before each fit) set the seed
    only: TensorFlow also empties its cache of eager kernels there, and the first eager read or
    assignment of each variable shape after it builds its kernel again. This shows what that costs.
    The fits stay the same: Keras draws first weights from its own seed and the data is shuffled
    with a fixed seed; only TensorFlow's stateful random ops (tf.random.uniform) would not restart."""
    context = tf_context.Context

    def set_seed_only(self, seed):
        self._seed = seed
        self._rng = random.Random(int(np.array(seed)))

    context._set_global_seed = set_seed_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--keep-kernel-cache",
        action="store_true",
        help="seed each fit without emptying TensorFlow's cache of eager kernels",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    args = parser.parse_args()
    if args.keep_kernel_cache:
        keep_kernel_cache()
    cfg, splits, data = prepared_data(args.epochs)
    ledger = Ledger()
    for name in HOOKS:
        setattr(MLflowCallback, name, ledger.timed_hook(name, getattr(MLflowCallback, name)))
    Sender._attempt = ledger.timed_job(Sender._attempt)
    curves.HELPER.draw = ledger.counted_helper(curves.HELPER.draw)
    for label, owner, name in END_WAITS:  # after HOOKS: on_train_end's wall time holds its CPU timing
        setattr(owner, name, ledger.timed_wait(label, getattr(owner, name)))
    per_fit: dict[str, list[float]] = defaultdict(list)
    end_waits: dict[str, list[float]] = defaultdict(list)
    baseline: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{Path(folder)}/mlflow.db")
        mlflow.set_experiment("callback-work")
        # The first tracked fit of a process also pays one-off costs (MLflow scanning the installed
        # packages at its first model save, matplotlib's fonts): reported apart, not in the medians.
        timed_fit(cfg, splits, data, [MLflowCallback()], False, False)
        first_fit = sum(ledger.seconds.values())
        for _ in range(args.repeats):
            baseline.append(timed_fit(cfg, splits, data, [], False, False)[0])
            ledger.seconds.clear()
            ledger.wall.clear()
            timed_fit(cfg, splits, data, [MLflowCallback()], False, False)
            for part, seconds in ledger.seconds.items():
                per_fit[part].append(seconds)
            for label, seconds in ledger.wall.items():
                end_waits[label].append(seconds)
    fit_s = statistics.median(baseline)
    parts_ms = {part: statistics.median(samples) * 1000 for part, samples in per_fit.items()}
    figures = {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "untracked_fit_s": fit_s,
        "parts_ms": dict(sorted(parts_ms.items(), key=lambda item: -item[1])),
        "total_ms": sum(parts_ms.values()),
        "first_fit_ms": first_fit * 1000,
        "end_waits_ms": {label.strip(): statistics.median(end_waits[label]) * 1000 for label, _, _ in END_WAITS},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_tables(figures)


def print_tables(figures: dict) -> None:
    """The CPU time of each part, then the end of training's waits, in ms per fit and as a share of
    the untracked fit."""
    fit_ms = figures["untracked_fit_s"] * 1000
    print(
        f"digits CNN, {figures['epochs']} epochs; no-tracking fit {fit_ms / 1000:.2f} s "
        f"(median of {figures['repeats']})"
    )
    print(f"{'part (CPU time: hooks, sender jobs, plot helper)':<58} {'ms per fit':>10} {'share':>7}")
    rows = [
        *figures["parts_ms"].items(),
        ("total", figures["total_ms"]),
        ("the first tracked fit of this process, with its one-off costs", figures["first_fit_ms"]),
    ]
    for part, ms in rows:
        print(f"{part:<58} {ms:>10.1f} {ms / fit_ms:>7.1%}")
    print(f"\n{'end of training (wall time on the training thread)':<58} {'ms per fit':>10} {'share':>7}")
    for (label, _, _), ms in zip(END_WAITS, figures["end_waits_ms"].values()):
        print(f"{label:<58} {ms:>10.1f} {ms / fit_ms:>7.1%}")


if __name__ == "__main__":
    main()
