"""The house rules docs/architecture.md states that a reader relies on: small rooms, one direction of dependence."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

SOURCES = sorted([*(ROOT / "plugins").glob("*.py"), *(ROOT / "experiments").glob("*.py")])


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines without its signature and docstring."""
    body = function.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_class_over_200_lines_and_no_function_body_over_40(path):
    tree = ast.parse(path.read_text())
    too_long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if (isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200)
        or (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > 40)
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
