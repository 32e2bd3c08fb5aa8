"""The package's modules import each other without cycles.

The graph is read from the source with :mod:`ast`: every ``import`` of a tqueues module
counts, at the top, under ``TYPE_CHECKING`` or inside a function (a lazy import is a
cycle waiting for the next refactoring all the same). Each client module is also
imported first in a fresh interpreter, which a cycle hidden by import order would break.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tqueues"

#: Cycles that predate this test (each a sorted tuple of its modules); none may grow.
#: tqueues.jobs validates queue settings and legacy jobs with the request models of
#: tqueues.dispatcher.models (imported lazily, the server extra), which import the model.
KNOWN_CYCLES = {("tqueues.dispatcher.models", "tqueues.jobs", "tqueues.lifecycle")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The tqueues modules ``name`` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.add(full)  # a submodule: from tqueues import codec
                elif base in MODULES:
                    found.add(base)  # a name of the module: from tqueues.ids import problem
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The modules of each strongly connected component of more than one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_the_client_modules_import_each_other_without_cycles() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    assert "tqueues.client.answers" in graph["tqueues.client.stream"]
    assert "tqueues.client.stream" in graph["tqueues.client.aio"]
    found = cycles(graph)
    assert found <= KNOWN_CYCLES, found - KNOWN_CYCLES


@pytest.mark.parametrize(
    "module", sorted(name for name in MODULES if name.startswith("tqueues.client."))
)
def test_each_client_module_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
