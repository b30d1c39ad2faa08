"""A sweep's progress: the jobs it plans, and what each job's end logs on the parent (a real store)."""

from __future__ import annotations

import mlflow
import pytest
from omegaconf import OmegaConf

from plugins.sweep_progress import duration, planned_jobs, progress_text, record_job_end


def sweep_config(overrides: list[str], **sweeper) -> OmegaConf:
    sweeper.setdefault("_target_", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    return OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": overrides}}})


@pytest.mark.parametrize(
    ("overrides", "sweeper", "planned"),
    [
        (["reg=none,l2", "trainer.epochs=2"], {}, 2),
        (["trainer.epochs=2"], {"params": {"reg": "none,l1,l2", "trainer.seed": "1,2"}}, 6),
        (["reg=none,l2"], {"params": {"callbacks": "basic,default", "trainer.seed": "range(1,4)"}}, 12),
        ([], {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 20}, 20),
        (["reg=glob(*)"], {}, None),  # a glob of a config group: only Hydra's config loader knows its options
        ([], {"_target_": "some.other.Sweeper"}, None),
    ],
)
def test_planned_jobs_counts_the_sweep(overrides, sweeper, planned):
    assert planned_jobs(sweep_config(overrides, **sweeper)) == planned


def test_progress_text_gives_the_count_the_time_and_the_time_left():
    assert progress_text(3, 0, 12, 90) == "job 3 of 12 done: 1m30s so far, about 4m30s left"
    assert progress_text(12, 1, 12, 3700) == "job 12 of 12 done (1 failed): 1h01m so far"
    assert progress_text(2, 0, None, 5) == "job 2 done: 5s so far"
    assert [duration(s) for s in (0, 59.6, 61, 7260)] == ["0s", "1m00s", "1m01s", "2h01m"]


def test_each_job_end_logs_the_count_as_a_step_and_the_description(tracking_uri):
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("sweep")
    parent = client.create_run(experiment, tags={"sweep": "true"}).info.run_id
    lines = []
    # Job 1 failed (before its run began, or with it): it counts as ended, and failed.
    for job, failed in ((0, False), (1, True), (2, False)):
        lines.append(record_job_end(client, parent, 4, job, failed))
    assert [line.split(":")[0] for line in lines] == [
        "job 1 of 4 done",
        "job 2 of 4 done (1 failed)",
        "job 3 of 4 done (1 failed)",
    ]
    assert "about" in lines[0] and "left" in lines[0]
    finished = [(m.step, m.value) for m in client.get_metric_history(parent, "jobs_finished")]
    failed = [(m.step, m.value) for m in client.get_metric_history(parent, "jobs_failed")]
    assert sorted(finished) == [(1, 1), (2, 1), (3, 2)] and sorted(failed) == [(1, 0), (2, 1), (3, 1)]
    tags = client.get_run(parent).data.tags
    assert tags["mlflow.note.content"].startswith("3 of 4 jobs done, 1 failed.")
    assert (tags["internal.sweep.job.0"], tags["internal.sweep.job.1"]) == ("finished", "failed")


def test_planned_jobs_reads_the_overrides_as_typed():
    # An interpolation only some jobs can resolve: counted, not resolved against the sweep's config.
    config = sweep_config(["optimizer=adam,sgd", "mlflow.run_name=${model.name}-${optimizer.momentum}"])
    assert planned_jobs(config) == 2
