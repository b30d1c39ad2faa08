"""experiments.compare over 1,000 runs in one experiment: time of its own work (imports excluded).

    python benchmarks/compare_speed.py [--runs 1000] [--epochs 20]

Logs --runs runs under one sweep parent into a temporary SQLite store with MlflowClient.log_batch
(tags, 100 params, summary metrics and --epochs points of val_loss, gap_loss and learning_rate
each), then times experiments.compare.main on them in this process, and the whole CLI in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag

from experiments.compare import main as compare

REGS = ["none", "l1", "l2", "l1_l2", "dropout", "batchnorm", "augment", "combined"]
SHARED_PARAMS = 95  # the runner logs about 100 params, almost all the same across a sweep's jobs


def job_params(index: int, reg: str) -> list[Param]:
    """Like the runner's: the config shared by the jobs, the regulariser's own, a per-job output folder."""
    own = {
        "reg.name": reg,
        "reg.l2": "0.0001" if "l2" in reg else "0.0",
        "model.total_params": str(20000 + index % 3),
        "callbacks.tensorboard.log_dir": f"/multirun/{index}/tensorboard",
        "optimizer.learning_rate": "0.001",
    }
    shared = {f"trainer.setting_{number}": str(number) for number in range(SHARED_PARAMS)}
    return [Param(key, value) for key, value in {**shared, **own}.items()]


def log_sweep(client: mlflow.MlflowClient, runs: int, epochs: int) -> str:
    experiment = client.create_experiment("compare-speed")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    client.set_tag(parent, "sweep", "true")
    now = int(time.time() * 1000)
    for index in range(runs):
        reg = REGS[index % len(REGS)]
        run_id = client.create_run(experiment).info.run_id
        curves = [
            Metric(key, scale / (epoch + 1), now, epoch)
            for epoch in range(epochs)
            for key, scale in (("val_loss", 1.0), ("gap_loss", 0.1), ("learning_rate", 1e-3))
        ]
        summary = [
            Metric(key, value, now, 0)
            for key, value in (
                ("test_accuracy", 0.9 + index % 7 / 100),
                ("test_loss", 0.3),
                ("best_val_loss", 0.2),
                ("best_epoch", epochs - 1),
                ("val_accuracy_at_best", 0.9),
                ("epochs_run", epochs),
                ("lr_changes", 0),
            )
        ]
        tags = [
            RunTag(key, value)
            for key, value in {
                "mlflow.parentRunId": parent,
                "mlflow.runName": f"cnn-{reg}-{index}",
                "model": "cnn",
                "reg": reg,
                "regularised": str(reg != "none").lower(),
                "early_stopping": "false",
                "reduce_lr": "false",
                "reproduce.command": f"python -m experiments.train reg={reg} trainer.seed={index % 5}",
            }.items()
        ]
        client.log_batch(run_id, metrics=curves + summary, params=job_params(index, reg), tags=tags)
        client.set_terminated(run_id)
    return parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        started = time.perf_counter()
        parent = log_sweep(client, args.runs, args.epochs)
        logged_s = time.perf_counter() - started
        options = ["--experiment", "compare-speed", "--tracking-uri", uri, "--output", str(Path(folder) / "report")]
        started = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                compare(options)
            finally:
                sys.stdout = stdout
        own = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.compare", *options], check=True, capture_output=True)
        whole = time.perf_counter() - started
        uploaded = len(client.list_artifacts(parent, "comparison"))
    figures = {
        "runs": args.runs,
        "epochs": args.epochs,
        "logging_s": logged_s,
        "compare_own_s": own,
        "compare_command_s": whole,
        "files_on_parent": uploaded,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"logged {args.runs} runs x {args.epochs} epochs in {logged_s:.1f} s")
    print(
        f"experiments.compare over {args.runs} runs: {own:.2f} s of its own work, "
        f"{whole:.2f} s as a command (with interpreter start-up and imports); {uploaded} files on the parent"
    )


if __name__ == "__main__":
    main()
