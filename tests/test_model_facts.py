"""What the callback records of the model and where it ran: the backend and its packages."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError

import keras

from plugins import model_facts


def test_a_model_s_requirements_name_the_backend_it_runs_on(monkeypatch):
    assert model_facts.pip_requirements()[1].startswith("tensorflow==")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    found = {"jax": "0.10.2", "jaxlib": "0.10.2"}

    def installed(package):
        if package not in found:
            raise PackageNotFoundError(package)
        return found[package]

    monkeypatch.setattr("importlib.metadata.version", installed)
    assert model_facts.pip_requirements() == [f"keras=={keras.__version__}", "jax==0.10.2", "jaxlib==0.10.2"]
    assert model_facts.backend() == ("jax", "0.10.2")
    del found["jaxlib"]  # what cannot be pinned is left out, not written as a version that is no version
    assert model_facts.pip_requirements() == [f"keras=={keras.__version__}", "jax==0.10.2"]
