"""The benchmarks behind the README's figures still run and still measure what they name."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_callback_work_reports_the_hooks_and_the_sender_jobs(run_cli):
    done = run_cli("benchmarks.callback_work", "--repeats", "1", "--epochs", "2", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "MLflowCallback failed" not in done.stderr
    parts = {line.rsplit(None, 2)[0] for line in done.stdout.splitlines()[2:]}
    # The sender's jobs ran: one log_batch per epoch, the model saved once, the files uploaded.
    assert {"hook on_epoch_end", "sender metrics of each epoch", "sender writing model/", "sender learning_curves.png", "total"} <= parts
