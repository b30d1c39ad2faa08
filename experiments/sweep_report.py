"""The sweep callback's hook (conf/train.yaml): when a sweep ends, compare its children and log the
report on its parent run."""

from __future__ import annotations

from pathlib import Path

import mlflow


def report_to_parent(parent_run_id: str, tracking_uri: str | None, folder: Path) -> None:
    """Compare a sweep's children into ``folder`` and log the report on its parent."""
    # Imported when a sweep ends, not when Hydra instantiates its callbacks in every job: the
    # report's statistics and plotting take two seconds to import, a tenth of a short run.
    from experiments.compare import main

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment(client.get_run(parent_run_id).info.experiment_id)
    main(
        ["--parent", parent_run_id, "--experiment", experiment.name, "--output", str(folder)]
        + ["--tracking-uri", client.tracking_uri]
    )
