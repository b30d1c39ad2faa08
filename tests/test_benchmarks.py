"""The benchmarks behind the README's figures still run, the README's way, and still measure what they name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_callback_work_reports_the_hooks_and_the_sender_jobs(tmp_path):
    # As the README runs it: a script, with the project installed (no PYTHONPATH).
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "callback_work.py"), "--repeats", "1", "--epochs", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "MLflowCallback failed" not in done.stderr
    parts = {line.rsplit(None, 2)[0] for line in done.stdout.splitlines()[2:]}
    # The sender's jobs ran: the metrics sent, the model saved once, the files uploaded; the helper
    # process drew the plot.
    assert {"hook on_epoch_end", "sender log_batch of metrics", "sender writing model/", "sender learning_curves.png",
            "helper process drawing learning_curves.png", "total"} <= parts


@pytest.mark.parametrize("script", ["tracking_overhead.py", "compare_speed.py", "server_gone.py", "sweep_parallel.py"])
def test_every_benchmark_script_starts_as_the_readme_runs_it(tmp_path, script):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr[-3000:]
