"""Two resumes of one run at once: exactly one takes it, before any training; the other is refused."""

from __future__ import annotations

import threading

import mlflow
import pytest

from experiments.checks import ConfigError
from experiments.resume import ResumePoint, claim


def killed_run(tracking_uri) -> tuple[mlflow.MlflowClient, str]:
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("keras-experiments")).info.run_id
    client.set_terminated(run_id, "KILLED")
    return client, run_id


@pytest.mark.parametrize("stagger_s", [0.0, 0.3, 1.2], ids=["together", "a-little-later", "after-the-first-read-back"])
def test_of_two_resumes_started_together_exactly_one_claims_the_run(tracking_uri, stagger_s):
    client, run_id = killed_run(tracking_uri)
    outcomes: list[str] = []

    def resume(delay: float) -> None:
        threading.Event().wait(delay)
        try:
            claim(mlflow.MlflowClient(tracking_uri), ResumePoint(run_id, 2, None), wait_s=1.0)
            outcomes.append("claimed")
        except ConfigError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=resume, args=(delay,)) for delay in (0.0, stagger_s)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [
        "claimed",
        f"resume={run_id}: another process is resuming this run; nothing was trained here",
    ]
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_claim_on_a_store_that_went_away_is_one_line(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'gone' / 'no.db'}")
    with pytest.raises(ConfigError, match="cannot claim the run"):
        claim(client, ResumePoint("0123456789abcdef", 2, None), wait_s=0)
