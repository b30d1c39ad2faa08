"""Hydra's own copies of a job's config and overrides, as typed, in ``<output>/.hydra/`` (and a sweep's
``multirun.yaml``): rewritten with secrets redacted, as every other copy the project writes."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from plugins.redaction import redact_tree


def redact_hydra_files() -> None:
    """Rewrite, redacted, each of Hydra's files of this job that holds a secret."""
    for path in hydra_files():
        if path.is_file():
            _redact_file(path)


def hydra_files() -> list[Path]:
    hydra = HydraConfig.get()
    files = []
    if hydra.output_subdir:
        folder = Path(hydra.runtime.output_dir) / hydra.output_subdir
        files += [folder / "config.yaml", folder / "hydra.yaml", folder / "overrides.yaml"]
    if hydra.mode == RunMode.MULTIRUN:
        files.append(Path(hydra.sweep.dir) / "multirun.yaml")
    return files


def _redact_file(path: Path) -> None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return  # not Hydra's file as Hydra writes it: nothing of ours to rewrite
    redacted = redact_tree(data)
    if redacted != data:
        path.write_text(yaml.safe_dump(redacted, sort_keys=False))
