"""The limits and defaults the dispatcher and its clients share are written once, in
tqueues/limits.py, which any install can import (it imports nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

from tqueues import limits
from tqueues.cli import admin, dispatcher, worker
from tqueues.dispatcher import models
from tqueues.settings import DispatcherSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ROOT / "tqueues" / "limits.py"


def sources() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text()) for path in (ROOT / "tqueues").rglob("*.py")}


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the string constants that are docstrings (or ``#:``-like attribute docs)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for statement in body:
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    found.add(id(statement.value))
    return found


def test_the_limits_module_imports_nothing() -> None:
    tree = ast.parse(LIMITS.read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert imported == ["__future__"]


def test_no_other_module_defines_a_shared_limit() -> None:
    names = set(limits.__all__)
    defined = []
    for path, tree in sources().items():
        if path == LIMITS:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            defined += [
                f"{path.relative_to(ROOT)}: {target.id}"
                for target in targets
                if isinstance(target, ast.Name) and target.id in names
            ]
    assert not defined


def test_no_other_module_spells_the_default_port_or_url() -> None:
    spelled = []
    for path, tree in sources().items():
        if path == LIMITS:
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                if str(limits.DEFAULT_PORT) in node.value:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelled


def test_every_side_uses_them() -> None:
    assert models.MAX_TAKE is limits.MAX_TAKE and models.MAX_OUTCOMES is limits.MAX_OUTCOMES
    assert DispatcherSettings().max_wait == limits.DEFAULT_MAX_WAIT
    assert (DispatcherSettings().listen_host, DispatcherSettings().listen_port) == (
        limits.DEFAULT_HOST,
        limits.DEFAULT_PORT,
    )
    assert WorkerSettings().endpoint_urls == (limits.DEFAULT_URL,)
    # The command lines' help says the defaults they use.
    assert f"[default: {limits.DEFAULT_LISTEN}]" in (dispatcher.__doc__ or "")
    assert f"[default: {limits.DEFAULT_MAX_WAIT:g}]" in (dispatcher.__doc__ or "")
    assert limits.DEFAULT_URL in (worker.__doc__ or "") and limits.DEFAULT_URL in (
        admin.__doc__ or ""
    )
