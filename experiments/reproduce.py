"""Re-run a logged run's configuration and, with --verify, prove the results match.

python -m experiments.reproduce RUN_ID [--verify] [--tolerance 1e-6] [--tracking-uri URI] [KEY=VALUE ...]

Overrides given after the run id are this command's own, on top of the run's: what a run cannot give
(its data file where that is outside the working folder, ``data.path=/data/set.npz``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

import mlflow
import pandas as pd

from experiments import PROJECT_ROOT, backends
from experiments.checks import ConfigError
from experiments.cli import TRACKING_URI_HELP, TrackingStoreError, open_tracking_store, read_run
from experiments.command import without_keys
from experiments.logged_overrides import checked_overrides
from experiments.resume import logged_overrides
from plugins import tags
from plugins.provenance import git_state

# Wall-clock timings differ on every run; they are not results.
NOT_REPRODUCIBLE = {"epoch_time_s"}
# Overrides the re-run sets itself.
OWN_OVERRIDES = ("mlflow.experiment_name=", "+mlflow.tags.reproduces=", "resume=")


class ReproduceError(Exception):
    """Something the user must fix; printed as one line."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A CLI should fail in seconds on an unreachable server, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        client = open_tracking_store(args.tracking_uri)
        original = fetch_run(client, args.run_id)
        overrides = [*without_keys(overrides_to_rerun(client, original), args.overrides), *args.overrides]
        warn_about_code_drift(original)
        new_run_id = rerun(client, original, overrides, recorded_backend(original))
        if not args.verify:
            print(f"reproduced {args.run_id} as run {new_run_id}")
            return 0
        report = compare_histories(client, args.run_id, new_run_id)
    except (ReproduceError, TrackingStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run {new_run_id} reproduces {args.run_id}; largest absolute difference per metric:")
    print(report.to_string(index=False))
    worst = report["max_abs_diff"].max()
    if worst <= args.tolerance:
        print(f"verified: every metric within {args.tolerance:g}")
        return 0
    print(f"NOT reproduced: differences up to {worst:g} exceed the tolerance {args.tolerance:g}")
    return 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run to reproduce")
    parser.add_argument("--verify", action="store_true", help="compare the metric histories of both runs")
    parser.add_argument(
        "--tolerance", type=non_negative_number, default=1e-6, help="largest allowed absolute difference"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=TRACKING_URI_HELP,
    )
    parser.add_argument(
        "overrides", nargs="*", help="overrides of this command's own on top of the run's, e.g. data.path=/data/set.npz"
    )
    return parser.parse_intermixed_args(argv)  # overrides before or after the options


def non_negative_number(text: str) -> float:
    """--tolerance: refused before the re-run, which a tolerance nothing can meet would waste."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return number


def fetch_run(client: mlflow.MlflowClient, run_id: str):
    run = read_run(client, run_id)
    if run is None:
        raise ReproduceError(f"no run {run_id} in the tracking store {client.tracking_uri}")
    return run


def overrides_to_rerun(client: mlflow.MlflowClient, run) -> list[str]:
    """The run's own Hydra overrides, checked (they are data from the store), less the ones the
    re-run sets itself."""
    try:
        overrides = logged_overrides(client, run.info.run_id)
        if overrides is None:
            raise ReproduceError(f"run {run.info.run_id} has no logged config (hydra/overrides.yaml)")
        checked = checked_overrides(run.info.run_id, overrides)
    except ConfigError as error:
        raise ReproduceError(str(error)) from None
    if checked.warning(run.info.run_id):
        print(f"warning: {checked.warning(run.info.run_id)}", file=sys.stderr)
    return [override for override in checked.kept if not override.startswith(OWN_OVERRIDES)]


def warn_about_code_drift(run) -> None:
    logged = run.data.tags.get(tags.GIT_COMMIT, "unknown")
    commit, dirty = git_state(PROJECT_ROOT)
    if logged != "unknown" and commit and commit != logged:
        print(
            f"warning: the run was made at commit {logged[:12]}, the working tree is at {commit[:12]}", file=sys.stderr
        )
    if run.data.tags.get(tags.GIT_DIRTY) == "true":
        print("warning: the run was made from a working tree with uncommitted changes", file=sys.stderr)
    if dirty:
        print("warning: the working tree has uncommitted changes", file=sys.stderr)


def recorded_backend(run) -> str:
    """The Keras backend the run trained on (its ``keras.backend`` param; a run made before that param
    trained on TensorFlow, the only backend the runner had), checked: it must be installed here."""
    backend = run.data.params.get("keras.backend", backends.DEFAULT)
    if backend not in backends.BACKENDS:  # data from the store: only a known name reaches the environment
        raise ReproduceError(
            f"run {run.info.run_id} names keras.backend={backend[:40]!r}: expected one of "
            f"{', '.join(backends.BACKENDS)}"
        )
    if not backends.installed(backend):
        raise ReproduceError(
            f"run {run.info.run_id} trained on Keras' {backend} backend, which is not installed here "
            f"(install it: {backends.INSTALL[backend]})"
        )
    return backend


def rerun(client: mlflow.MlflowClient, original, overrides: list[str], backend: str) -> str:
    """Train the same config, on the same backend, into a new run tagged reproduces=<original>; return its id."""
    experiment = client.get_experiment(original.info.experiment_id).name
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        *overrides,
        f"mlflow.experiment_name={experiment}",
        f"+mlflow.tags.reproduces={original.info.run_id}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri, "KERAS_BACKEND": backend}
    if subprocess.run(command, env=env, cwd=os.getcwd()).returncode != 0:
        raise ReproduceError(f"the re-run of {original.info.run_id} failed (command: {' '.join(command[1:])})")
    if "MLFLOW_RUN_ID" in os.environ:  # under `mlflow run` the re-run went into that run
        return os.environ["MLFLOW_RUN_ID"]
    newest = client.search_runs(
        [original.info.experiment_id],
        f"tags.reproduces = '{original.info.run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return newest[0].info.run_id


def compare_histories(client: mlflow.MlflowClient, original_id: str, new_id: str) -> pd.DataFrame:
    """One row per metric of the original: points compared and the largest absolute difference."""
    rows = []
    for key in sorted(client.get_run(original_id).data.metrics):
        if key in NOT_REPRODUCIBLE:
            continue
        before = {m.step: m.value for m in client.get_metric_history(original_id, key)}
        after = {m.step: m.value for m in client.get_metric_history(new_id, key)}
        same_steps = before.keys() == after.keys()
        diff = max((abs(before[step] - after[step]) for step in before), default=0.0) if same_steps else float("inf")
        rows.append({"metric": key, "points": len(before), "points_rerun": len(after), "max_abs_diff": diff})
    return pd.DataFrame(rows).sort_values("max_abs_diff", ascending=False, kind="stable")


if __name__ == "__main__":
    raise SystemExit(main())
