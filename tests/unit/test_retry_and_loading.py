"""Pure helpers: retry backoff and loading a job's method under an allow-list."""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqueues.errors import ImportTargetError, MethodNotAllowed
from tqueues.loading import import_target, is_allowed, resolve, split_target
from tqueues.retry import RetryPolicy


@given(attempt=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_grows_and_stays_within_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base=1.0, cap=60.0, jitter=0.5)
    delay = policy.delay(attempt, rng=random.Random(seed))
    full = min(60.0, 2.0 ** (attempt - 1))
    assert full * 0.5 <= delay <= full


def test_backoff_without_jitter_doubles() -> None:
    policy = RetryPolicy(base=0.5, cap=100, jitter=0)
    assert [policy.delay(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        policy.delay(0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pkg.mod:func", ("pkg.mod", "func")), ("pkg.mod.func", ("pkg.mod", "func")),
     ("mod:Cls.method", ("mod", "Cls.method"))],
)  # fmt: skip
def test_split_target(name: str, expected: tuple[str, str]) -> None:
    assert split_target(name) == expected


@pytest.mark.parametrize("name", ["", "func", "pkg.mod:", ":func", "pkg mod:f", "a.b:c;d", "1a:b"])
def test_split_target_rejects_malformed_names(name: str) -> None:
    with pytest.raises(ImportTargetError):
        split_target(name)


def test_import_target_finds_the_callable() -> None:
    assert import_target("json:dumps") is json.dumps
    assert import_target("json.dumps") is json.dumps


@pytest.mark.parametrize(
    ("name", "message"),
    [("no_such_module_xyz:f", "cannot import"), ("json:nothing", "has no"),
     ("json:__doc__", "not callable")],
)  # fmt: skip
def test_import_target_errors_are_import_errors(name: str, message: str) -> None:
    with pytest.raises(ImportError, match=message):
        import_target(name)


def test_allow_list_refuses_before_importing() -> None:
    assert is_allowed("myapp.tasks.email", ["myapp.tasks"])
    assert is_allowed("myapp.tasks", ["myapp.tasks"])
    assert not is_allowed("myapp.tasksevil", ["myapp.tasks"])
    assert not is_allowed("os", ["myapp"])
    with pytest.raises(MethodNotAllowed, match="not allowed"):
        import_target("tests.unit.never_imported:f", allow=["json"])

    assert "tests.unit.never_imported" not in sys.modules


def test_resolve_remembers_the_callable_and_whether_it_is_a_coroutine_function() -> None:
    assert resolve("json:dumps", ("json",)) == (json.dumps, False)
    assert resolve("asyncio:sleep", ()) == (asyncio.sleep, True)
    hits = resolve.cache_info().hits
    assert resolve("json:dumps", ("json",)) == (json.dumps, False)
    assert resolve.cache_info().hits == hits + 1
    # The allow-list is part of what is remembered: allowed under one is not under another.
    with pytest.raises(MethodNotAllowed):
        resolve("json:dumps", ("myapp",))


def test_resolve_does_not_remember_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportTargetError, match="cannot import"):
        resolve("tq_deployed_later:run", ())
    (tmp_path / "tq_deployed_later.py").write_text("def run():\n    return 1\n")
    importlib.invalidate_caches()
    try:
        func, is_coroutine = resolve("tq_deployed_later:run", ())
        assert func() == 1 and not is_coroutine
    finally:
        sys.modules.pop("tq_deployed_later", None)
