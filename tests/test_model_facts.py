"""What the callback records of the model and where it ran: the backend and its packages."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError

import keras

from plugins import model_facts


def test_a_model_s_requirements_name_the_backend_it_runs_on(monkeypatch):
    assert model_facts.pip_requirements()[1].startswith(f"{keras.backend.backend()}==")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    found = {"jax": "0.10.2", "jaxlib": "0.10.2"}
    monkeypatch.setattr(model_facts, "package_version", found.get)
    assert model_facts.pip_requirements() == [f"keras=={keras.__version__}", "jax==0.10.2", "jaxlib==0.10.2"]
    assert model_facts.backend() == ("jax", "0.10.2")
    del found["jaxlib"]  # what cannot be pinned is left out, not written as a version that is no version
    assert model_facts.pip_requirements() == [f"keras=={keras.__version__}", "jax==0.10.2"]


def test_a_package_s_version_is_the_loaded_module_s_else_the_installed_distribution_s(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", type("module", (), {"__version__": "0.10.2"}))
    for unloaded in ("jaxlib", "torch"):
        monkeypatch.delitem(sys.modules, unloaded, raising=False)

    def installed(package):
        if package != "jaxlib":
            raise PackageNotFoundError(package)
        return "0.10.1"

    monkeypatch.setattr("importlib.metadata.version", installed)
    assert [model_facts.package_version(name) for name in ("jax", "jaxlib", "torch")] == ["0.10.2", "0.10.1", None]


def test_a_torch_cpu_build_is_pinned_by_its_release_an_index_serves(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    monkeypatch.setattr(model_facts, "package_version", {"torch": "2.13.0+cpu"}.get)
    assert model_facts.pip_requirements() == [f"keras=={keras.__version__}", "torch==2.13.0"]
