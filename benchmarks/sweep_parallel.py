"""Wall time of a 4-job sweep with the joblib launcher (n_jobs=2) against the same sweep run sequentially.

    python benchmarks/sweep_parallel.py [--epochs 40] [--repeats 2] [extra overrides]

Each sweep is the real command (`python -m experiments.train -m reg=none,l2,dropout,batchnorm ...`)
into a fresh SQLite store; the two launchers alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["-m", "reg=none,l2,dropout,batchnorm", "callbacks=basic", "trainer.verbose=0"]
LAUNCHERS = {
    "sequential (basic launcher)": [],
    "joblib, n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "joblib, n_jobs=2, trainer.threads=1": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=1"],
}


def timed_sweep(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "experiments.train", *SWEEP, *extra], cwd=folder, check=True, capture_output=True
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every job")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    times = {name: [] for name in LAUNCHERS}
    for _ in range(args.repeats):
        for name, launcher in LAUNCHERS.items():
            times[name].append(timed_sweep([f"trainer.epochs={args.epochs}", *launcher, *args.overrides]))
    sequential = statistics.median(times["sequential (basic launcher)"])
    if args.json:
        rows = [
            {"sweep": name, "median_s": statistics.median(samples), "ratio": statistics.median(samples) / sequential}
            for name, samples in times.items()
        ]
        print(json.dumps({"epochs": args.epochs, "repeats": args.repeats, "sweeps": rows}, indent=2))
        return
    print(f"4-job sweep, {args.epochs} epochs each, median of {args.repeats}")
    for name, samples in times.items():
        print(f"{name:<30} {statistics.median(samples):7.1f} s   x{statistics.median(samples) / sequential:.2f}")


if __name__ == "__main__":
    main()
