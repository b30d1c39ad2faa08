"""A Python whose site-packages lack some packages: TensorFlow "not installed", for the tests of the
other Keras backends, without a second virtual environment of gigabytes.

``environment_without(("tensorflow",), folder)`` gives the environment variables for a subprocess:
its site-packages folder is swapped (by a sitecustomize run at start-up) for a folder of links to
every entry but the hidden packages' modules and distributions. Imports, ``importlib.util.find_spec``
and ``importlib.metadata`` then see them as never installed, as a machine without them would.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path

from tests.conftest import ROOT

HOOK = """import json, os, sys
views = json.loads(os.environ["HIDDEN_PACKAGES_VIEWS"])
sys.path[:] = [views.get(entry, entry) for entry in sys.path]
"""


def environment_without(packages: tuple[str, ...], folder: Path) -> dict[str, str]:
    """Environment variables (on top of os.environ) for a Python that lacks ``packages``."""
    views = {}
    for number, real in enumerate(_site_folders()):
        view = folder / f"site-{number}"
        view.mkdir(parents=True, exist_ok=True)
        for entry in Path(real).iterdir():
            if not _hidden(entry.name, packages) and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
        views[real] = str(view)
    (folder / "sitecustomize.py").write_text(HOOK)
    return {
        **os.environ,
        "HIDDEN_PACKAGES_VIEWS": json.dumps(views),
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
    }


def _site_folders() -> list[str]:
    return [entry for entry in site.getsitepackages() if entry in sys.path and Path(entry).is_dir()]


def _hidden(name: str, packages: tuple[str, ...]) -> bool:
    """A module, package or distribution of one of ``packages`` (tensorflow, tensorflow-2.21.0.dist-info,
    tensorflow_io_gcs_filesystem, tensorboard_data_server...)."""
    stem = name.split("-")[0].split(".")[0].lower()
    return any(stem == package or stem.startswith(f"{package}_") for package in packages)
