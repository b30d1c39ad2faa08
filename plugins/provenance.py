"""Where a run's code came from: the git commit and whether the working tree had changes; the
packages of the Keras backend it trained on."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The packages each Keras backend runs on: what a model's requirements must name, and what a run on
# that backend needs installed.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",), "numpy": ()}


def git_state(folder: str | Path = ".") -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository holding ``folder``; (None, None) outside one."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


def _git(folder: str | Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=10)
    return done.stdout.strip()
