"""The benchmarks behind the README's figures still run, the README's way, and still measure what they name."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_callback_work_reports_the_hooks_and_the_sender_jobs(tmp_path):
    # As the docs run it: a script, with the project installed (no PYTHONPATH).
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "callback_work.py"), "--repeats", "1", "--epochs", "2", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "MLflowCallback failed" not in done.stderr
    figures = json.loads(done.stdout)
    # The sender's jobs ran: the metrics sent, the model saved once, the files uploaded; the helper
    # process drew the plot.
    assert {
        "hook on_epoch_end",
        "sender log_batch of metrics",
        "sender writing model/",
        "sender learning_curves.png",
        "helper process drawing learning_curves.png",
    } <= set(figures["parts_ms"])
    assert figures["total_ms"] == pytest.approx(sum(figures["parts_ms"].values()))
    # The end's waits, in ms: each was timed, and they happen inside on_train_end.
    waits = figures["end_waits_ms"]
    assert list(waits) == [
        "on_train_end, all of it",
        "waiting for the helper's learning_curves.png",
        "then waiting for the sender (model/, uploads)",
        "then ending the run",
    ]
    assert waits["waiting for the helper's learning_curves.png"] > 0 and waits["then ending the run"] > 0
    assert waits["on_train_end, all of it"] >= sum(list(waits.values())[1:])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_tracking_overhead_splits_each_fit_into_its_start_and_first_epoch_later_epochs_and_end(tmp_path, backend):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tracking_overhead.py"),
            *("--backend", backend),
            "--repeats",
            "1",
            "--epochs",
            "2",
            "--setups",
            "callback",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    rows = {row["setup"]: row for row in figures["setups"]}
    assert figures["backend"] == backend and list(rows) == ["no tracking", "MLflowCallback (everything on)"]
    for name, row in rows.items():
        # One fit of two epochs: its start and first epoch, its one later epoch and its end are the whole fit.
        parts = row["start_and_first_epoch_ms"] / 1000 + row["later_epoch_ms"] / 1000 + row["end_of_training_s"]
        assert row["median_s"] == pytest.approx(parts, abs=0.001), name
        assert row["fits"] == 1 and 0 <= row["slow_releases"] <= 1
    untracked, tracked = rows["no tracking"], rows["MLflowCallback (everything on)"]
    assert untracked["ratio"] == 1.0
    assert tracked["ratio"] == pytest.approx(tracked["median_s"] / untracked["median_s"])


@pytest.mark.parametrize("script", ["compare_speed.py", "input_pipeline.py", "server_gone.py", "sweep_parallel.py"])
def test_every_benchmark_script_starts_as_the_readme_runs_it(tmp_path, script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr[-3000:]


def test_keep_kernel_cache_leaves_the_cache_and_the_benchmark_fits_the_same(monkeypatch):
    import keras
    import tensorflow as tf
    from tensorflow.python import pywrap_tfe
    from tensorflow.python.eager import context

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import callback_work

    context.ensure_initialized()
    clears = []
    monkeypatch.setattr(pywrap_tfe, "TFE_ContextClearCaches", lambda handle: clears.append(handle))
    monkeypatch.setattr(context.Context, "_set_global_seed", context.Context._set_global_seed)  # put back after
    keras.utils.set_random_seed(0)
    assert len(clears) == 1  # what the option works around: TensorFlow empties the cache at each seed
    callback_work.keep_kernel_cache()

    def seeded_start():
        """What a benchmark fit draws at random: the first weights and the order of a shuffled set."""
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        order = list(tf.data.Dataset.range(8).shuffle(8, seed=0).as_numpy_iterator())
        return model.get_weights(), order

    (weights, order), (weights_again, order_again) = seeded_start(), seeded_start()
    assert len(clears) == 1
    assert order == order_again and sorted(order) == list(range(8))
    assert all((a == b).all() for a, b in zip(weights, weights_again))


def test_the_median_interval_holds_the_median_and_narrows_with_more_repeats(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from tracking_overhead import median_interval

    noisy = [1.04 + 0.1 * ((index * 7) % 11 - 5) / 5 for index in range(10)]  # 0.94 .. 1.14
    middle = statistics.median(noisy)  # 1.05
    low, high = median_interval(noisy)
    assert min(noisy) <= low < middle < high <= max(noisy)
    wide = high - low
    low, high = median_interval(noisy * 4)
    assert low < middle < high and high - low < wide
    assert median_interval([1.02] * 5) == (1.02, 1.02)
    assert median_interval(noisy) == median_interval(noisy)  # seeded: the same table for the same fits


def test_model_size_times_fits_and_counts_the_bytes_a_run_stores(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "model_size.py"),
            *("--sizes", "0.05", "--repeats", "1", "--epochs", "3", "--json"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout)["sizes"]
    assert abs(row["parameters"] - 50_000) < 5_000  # the width is chosen for the size asked
    assert row["untracked"]["stored_bytes"] == 0 and row["save_bytes"] > 4 * row["parameters"]
    # The logged model alone (its Keras file is the checkpoint too), with its small files beside it.
    assert row["stored_in_model_files"] == pytest.approx(1.0, abs=0.1)
    assert row["tracked"]["end_s"] > 0 and row["fit_ratio"] == row["tracked"]["fit_s"] / row["untracked"]["fit_s"]
