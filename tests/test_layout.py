"""The house rules docs/architecture.md states that a reader relies on: small rooms, one direction of dependence."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

SOURCES = sorted([*(ROOT / "plugins").glob("*.py"), *(ROOT / "experiments").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_class_over_250_lines_and_no_function_over_60(path):
    tree = ast.parse(path.read_text())
    too_long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if (isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250)
        or (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60)
    ]
    assert too_long == []


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("*.py")), ids=lambda path: path.name)
def test_plugins_never_import_experiments(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not any(name == "experiments" or name.startswith("experiments.") for name in imported)
