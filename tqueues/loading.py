"""Finding the function a job names: ``package.module:function`` (or ``package.module.function``).

Only modules under the worker's allow-list are imported: a name outside it raises
:class:`~tqueues.errors.MethodNotAllowed` before anything is imported.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from tqueues.errors import ImportTargetError, MethodNotAllowed

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def split_target(name: str) -> tuple[str, str]:
    """``"pkg.mod:func"`` or ``"pkg.mod.func"`` as ``("pkg.mod", "func")``.

    Raises ImportTargetError.
    """
    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    if not module or not attr or not _DOTTED.match(module) or not _DOTTED.match(attr):
        raise ImportTargetError(f"method {name!r} is not of the form package.module:function")
    return module, attr


def is_allowed(module: str, allow: Sequence[str]) -> bool:
    """True if ``module`` is one of the ``allow`` prefixes or inside one (``a.b`` allows ``a.b.c``).

    An empty allow-list allows everything.
    """
    if not allow:
        return True
    return any(module == prefix or module.startswith(prefix.rstrip(".") + ".") for prefix in allow)


def import_target(name: str, *, allow: Sequence[str] = ()) -> Callable[..., Any]:
    """The callable ``name`` names.

    Raises MethodNotAllowed or ImportTargetError (both also ImportErrors).
    """
    module_name, attr = split_target(name)
    if not is_allowed(module_name, allow):
        raise MethodNotAllowed(
            f"method {name!r} is not allowed on this worker (allowed: {', '.join(allow)})"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ImportTargetError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportTargetError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise ImportTargetError(f"{name!r} is not callable")
    return target


@functools.lru_cache(maxsize=1024)
def resolve(name: str, allow: tuple[str, ...] = ()) -> tuple[Callable[..., Any], bool]:
    """:func:`import_target` remembered: the callable and whether it is a coroutine function.

    A worker runs the same few methods over and over; resolving a name once saves the
    parse, the allow-list check and the attribute walk on every job. Only successes are
    remembered (an error is raised again, and retried, on the next call).

    Raises MethodNotAllowed or ImportTargetError.
    """
    func = import_target(name, allow=allow)
    return func, inspect.iscoroutinefunction(func)
