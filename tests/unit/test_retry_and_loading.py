"""Pure helpers: retry backoff (of failed jobs and of every retrying loop) and loading a
job's method under an allow-list."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqueues.errors import ImportTargetError, MethodNotAllowed
from tqueues.loading import (
    MethodNotFound,
    import_target,
    is_allowed,
    resolve,
    split_target,
    unfindable,
)
from tqueues.retry import Backoff, RetryPolicy


@given(attempt=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_grows_and_stays_within_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base=1.0, cap=60.0, jitter=0.5)
    delay = policy.delay(attempt, rng=random.Random(seed))
    full = min(60.0, 2.0 ** (attempt - 1))
    assert full * 0.5 <= delay <= full


def test_a_loops_backoff_doubles_from_a_tenth_of_a_second_to_five_with_jitter() -> None:
    backoff = Backoff(rng=random.Random(7))
    waits = [backoff.next() for _ in range(10)]
    ceilings = [min(5.0, 0.1 * 2**n) for n in range(10)]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling * 0.5 <= wait <= ceiling
    assert backoff.failures == 10
    backoff.reset()
    assert backoff.next() <= 0.1


@given(base=st.floats(0.01, 2), cap=st.floats(0.01, 10), failures=st.integers(1, 100))
def test_a_loops_backoff_follows_the_retry_policy(base: float, cap: float, failures: int) -> None:
    backoff = Backoff(base=base, cap=cap, rng=random.Random(failures))
    waits = [backoff.next() for _ in range(failures)]
    policy, rng = RetryPolicy(base=base, cap=cap, jitter=0.5), random.Random(failures)
    assert waits == [policy.delay(n, rng=rng) for n in range(1, failures + 1)]


async def test_a_retry_loop_ends_when_cancelled_even_if_an_attempt_swallowed_it() -> None:
    attempts = 0
    attempting = asyncio.Event()

    async def attempt() -> None:
        # What a driver may do (and asyncio.wait_for of Python 3.11, when what it waits
        # for ends at the moment it is cancelled): the cancellation becomes something else
        nonlocal attempts
        attempts += 1
        attempting.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("connection closed") from None

    async def loop() -> None:
        backoff = Backoff(base=60.0, cap=60.0)  # a wait no test would see the end of
        while True:
            try:
                await attempt()
            except RuntimeError:
                await backoff.sleep()

    task = asyncio.create_task(loop())
    await asyncio.wait_for(attempting.wait(), 5)
    task.cancel()
    # Then the loop ends at once, cancelled, instead of waiting for its next attempt
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done and task.cancelled() and attempts == 1


async def test_backoff_sleep_waits_the_next_delay() -> None:
    backoff = Backoff(base=0.05, cap=0.05, jitter=0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backoff.sleep()
    await backoff.sleep(0.05)
    assert loop.time() - started >= 0.1 and backoff.failures == 1


def test_backoff_without_jitter_doubles() -> None:
    policy = RetryPolicy(base=0.5, cap=100, jitter=0)
    assert [policy.delay(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        policy.delay(0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pkg.mod:func", ("pkg.mod", "func")), ("pkg.mod.func", ("pkg.mod", "func")),
     ("mod:snake_case2", ("mod", "snake_case2"))],
)  # fmt: skip
def test_split_target(name: str, expected: tuple[str, str]) -> None:
    assert split_target(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "func", "pkg.mod:", ":func", "pkg mod:f", "a.b:c;d", "1a:b", "mod:Cls.method",
     "mod:_f", "mod:__f__", "_mod:f", "pkg.__init__:f", "mod._f", "a..b:c", "a:b:c"],
)  # fmt: skip
def test_split_target_rejects_malformed_names(name: str) -> None:
    with pytest.raises(ImportTargetError):
        split_target(name)


def test_import_target_finds_the_callable() -> None:
    assert import_target("json:dumps") is json.dumps
    assert import_target("json.dumps") is json.dumps


@pytest.mark.parametrize(
    ("name", "message"),
    [("no_such_module_xyz:f", "cannot import"), ("json:nothing", "has no"),
     ("json:decoder", "not callable")],
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


# -- what an allowed module lets a job reach (issue #21, A) --------------------------------

#: An allowed package that, like most modules, imports things it does not mean to offer.
ALLOWED_INIT = """
import asyncio
import functools
import logging
import os
import subprocess
from builtins import eval as evaluate
from logging import basicConfig
from os import system
from subprocess import Popen
from subprocess import run as run_process


def add(a, b, **_):
    return a + b


async def coro(**_):
    return "coro"


def _private(**_):
    return "private"


class Task:
    def __init__(self, **_):
        self.made = True

    @staticmethod
    def run(**_):
        return "static"

    def __call__(self, **_):
        return "called"


class Sub(Popen):
    pass


task = Task()  # a callable instance of a class defined here
add_one = functools.partial(add, 1)  # a partial of a function defined here
system_partial = functools.partial(os.system)  # a partial of a function defined elsewhere
lying = functools.partial(os.system)
lying.__module__ = __name__  # claims to be defined here
CONSTANT = 3
"""


@pytest.fixture
def allowed_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The package ``tq_allowed`` (with a private ``_impl`` and a ``__main__``) importable."""
    package = tmp_path / "tq_allowed"
    package.mkdir()
    (package / "__init__.py").write_text(ALLOWED_INIT)
    (package / "_impl.py").write_text("def run(**_):\n    return 'impl'\n")
    (package / "__main__.py").write_text("def run(**_):\n    return 'main'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "tq_allowed"
    for name in [m for m in sys.modules if m == "tq_allowed" or m.startswith("tq_allowed.")]:
        del sys.modules[name]


ALLOW = ("tq_allowed",)


@pytest.mark.parametrize(
    "name",
    [
        # functions an allowed module imported, reached through it (the review's bypasses)
        "tq_allowed:asyncio.log.logging.basicConfig",
        "tq_allowed:os.system",
        "tq_allowed:subprocess.run",
        "tq_allowed:functools.partial",
        # re-exported with from-imports: defined in posix/os, subprocess, logging
        "tq_allowed:system",
        "tq_allowed:run_process",
        "tq_allowed:basicConfig",
        "tq_allowed.system",
        "tq_allowed:evaluate",  # a builtin: defined in 'builtins'
        # classes: calling one constructs an instance (and runs whatever __init__ it got)
        "tq_allowed:Task",
        "tq_allowed:Popen",
        "tq_allowed:Sub",
        "tq_allowed.Task",
        # a partial of a foreign function, even one whose __module__ claims otherwise
        "tq_allowed:system_partial",
        "tq_allowed:lying",
    ],
)
def test_only_functions_defined_in_allowed_modules_can_be_reached(
    allowed_pkg: str, name: str
) -> None:
    with pytest.raises(ImportTargetError, match=r"not allowed|public|module:function"):
        import_target(name, allow=ALLOW)


@pytest.mark.parametrize(
    "name",
    ["tq_allowed.asyncio.log.logging.basicConfig", "tq_allowed.os.system",
     "tq_allowed.subprocess.run"],
)  # fmt: skip
def test_without_a_colon_a_name_is_a_module_and_one_function(allowed_pkg: str, name: str) -> None:
    # "a.b.c" is function "c" of module "a.b": what "a" imported is no module "a.b"
    with pytest.raises(MethodNotFound, match=r"No module named 'tq_allowed\.[a-z]+'"):
        import_target(name, allow=ALLOW)


@pytest.mark.parametrize(
    "name",
    [
        "tq_allowed:__builtins__",
        "tq_allowed:__loader__",
        "tq_allowed:__spec__.loader.load_module",
        "tq_allowed:add.__class__",
        "tq_allowed:add.__globals__",
        "tq_allowed:add.__globals__.get",
        "tq_allowed:add.__init__.__globals__",
        "tq_allowed:Task.__init__",
        "tq_allowed:Task.run",
        "tq_allowed:task.__call__",
        "tq_allowed:_private",
        "tq_allowed._impl:run",
        "tq_allowed.__main__:run",
        "tq_allowed.__builtins__",
        "tq_allowed._private",
    ],
)
@pytest.mark.parametrize("allow", [ALLOW, ()], ids=["allow", "allow_any"])
def test_a_method_is_one_public_name_even_with_allow_any(
    allowed_pkg: str, name: str, allow: tuple[str, ...]
) -> None:
    with pytest.raises(ImportTargetError, match=r"public|one function"):
        import_target(name, allow=allow)


def test_allow_any_still_reaches_any_function_by_its_own_module(allowed_pkg: str) -> None:
    assert import_target("os:system", allow=()) is os.system
    assert import_target("tq_allowed:system", allow=()) is os.system
    with pytest.raises(MethodNotAllowed, match="class"):
        import_target("tq_allowed:Task", allow=())


def test_functions_of_allowed_modules_still_run(allowed_pkg: str) -> None:
    assert import_target("tq_allowed:add", allow=ALLOW)(1, 2) == 3
    assert import_target("tq_allowed.add", allow=ALLOW)(1, 2) == 3
    assert import_target("tq_allowed:add_one", allow=ALLOW)(2) == 3
    assert import_target("tq_allowed:task", allow=ALLOW)() == "called"
    func, is_coroutine = resolve("tq_allowed:coro", ALLOW)
    assert is_coroutine and asyncio.run(func()) == "coro"
    examples = importlib.import_module("examples.tasks")
    assert import_target("examples.tasks:add", allow=["examples.tasks"]) is examples.add
    assert import_target("examples.tasks.checksum", allow=["examples"]) is examples.checksum


def test_a_refused_name_imports_nothing_and_says_why(allowed_pkg: str) -> None:
    with pytest.raises(MethodNotAllowed, match=r"'posix'.*outside the allow-list \(tq_allowed\)"):
        import_target("tq_allowed:system", allow=ALLOW)
    with pytest.raises(ImportTargetError, match="'_impl'"):
        import_target("tq_allowed._impl:run", allow=ALLOW)
    assert "tq_allowed._impl" not in sys.modules


def test_unfindable_names_the_allow_prefixes_no_module_is_found_for(allowed_pkg: str) -> None:
    prefixes = ["tq_allowed", "tq_allowed.", "json", "tq_nowhere", "tq_nowhere.tasks",
                "json.nothing", "my-app"]  # fmt: skip
    assert unfindable(prefixes) == [
        ("tq_nowhere", "No module named 'tq_nowhere'"),
        ("tq_nowhere.tasks", "No module named 'tq_nowhere'"),
        ("json.nothing", "No module named 'json.nothing'"),
        ("my-app", "No module named 'my-app'"),
    ]
    # looking a prefix up imports its parents, not the module
    assert unfindable(["tq_allowed._impl"]) == [] and "tq_allowed._impl" not in sys.modules
