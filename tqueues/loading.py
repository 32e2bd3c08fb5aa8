"""Finding the function a job names: ``package.module:function`` (or ``package.module.function``).

A job's method is a module path and **one** function of that module, every part of it a
public name (no leading underscore, so no dunder either). The function must be defined in
a module under the worker's allow-list, not merely be reachable from one:

1. the name is parsed; a malformed one, one with a private part or with more than one
   name after the ``:``, raises :class:`InvalidMethodName` (no worker runs it);
2. the module must be under an ``allow`` prefix, else :class:`~tqueues.errors.MethodNotAllowed`
   is raised **before anything is imported**;
3. the module is imported and the function looked up in it; when either fails,
   :class:`MethodNotFound` (what this worker can import, not the job, is at fault);
4. what was found must be a function, not a class (calling a class constructs an
   instance, running whatever ``__init__`` it inherited), and the module it was defined
   in (its ``__module__``; for a ``functools.partial``, that of the function it wraps)
   must be under an ``allow`` prefix too, else MethodNotAllowed: ``os.system`` imported
   by an allowed module (``from os import system``) is ``posix``'s, not that module's.
   Something not callable is MethodNotFound.

An empty allow-list (``--allow_any``) skips the module checks of 2 and 4, not the rest.
``__module__`` is what a function's own module says it is: code in an allowed module can
hand out anything as its own (that module is trusted), but whatever a job reaches by
walking attributes or through another module's imports is refused.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqueues.errors import ImportTargetError, MethodNotAllowed

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class InvalidMethodName(ImportTargetError):
    """The job's method is not a name any worker runs (not ``package.module:function``, a
    private or dunder part, more than one name after the ``:``); its run fails for good."""

    code = "bad_method"


class MethodNotFound(ImportTargetError):
    """The job's method cannot be loaded on this worker: its module does not import, or has
    no such function. That is the worker's set-up (its import path, its version of the
    code), not the job's fault: the run fails as any other and is retried."""

    code = "method_not_found"


def split_target(name: str) -> tuple[str, str]:
    """``"pkg.mod:func"`` or ``"pkg.mod.func"`` as ``("pkg.mod", "func")``.

    Every part must be a public identifier, and there is one function name: after a ``:``
    a dotted path (``mod:Cls.method``, ``mod:os.system``) is refused.

    Raises InvalidMethodName.
    """
    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    parts = [*module.split("."), *attr.split(".")]
    if not module or not attr or not all(_IDENTIFIER.match(part) for part in parts):
        raise InvalidMethodName(f"method {name!r} is not of the form package.module:function")
    private = [part for part in parts if part.startswith("_")]
    if private:
        raise InvalidMethodName(
            f"method {name!r} names {private[0]!r}: only public names (no leading "
            "underscore) may be run"
        )
    if "." in attr:
        raise InvalidMethodName(
            f"method {name!r} names an attribute path {attr!r}: a method is one function "
            "of its module (package.module:function)"
        )
    return module, attr


def is_allowed(module: str, allow: Sequence[str]) -> bool:
    """True if ``module`` is one of the ``allow`` prefixes or inside one (``a.b`` allows ``a.b.c``).

    An empty allow-list allows everything.
    """
    if not allow:
        return True
    return any(module == prefix or module.startswith(prefix.rstrip(".") + ".") for prefix in allow)


def defined_in(target: object) -> str | None:
    """The module ``target`` says it was defined in: its ``__module__``, through any
    ``functools.partial`` to the function it wraps (whose own ``__module__`` is
    ``functools``, and which can be set to anything); None if that is not a string."""
    while isinstance(target, functools.partial):
        target = target.func
    try:
        module = getattr(target, "__module__", None)
    except Exception:  # a property of the object's class may raise anything
        return None
    return module if isinstance(module, str) else None


def _refused(name: str, why: str) -> MethodNotAllowed:
    return MethodNotAllowed(f"method {name!r} is not allowed on this worker: {why}")


def _outside(allow: Sequence[str]) -> str:
    return f"outside the allow-list ({', '.join(allow)})"


def import_target(name: str, *, allow: Sequence[str] = ()) -> Callable[..., Any]:
    """The function ``name`` names, under the rules of this module's docstring.

    Raises InvalidMethodName, MethodNotAllowed (the name's module is checked before it is
    imported) or MethodNotFound: all ImportTargetErrors, hence ImportErrors.
    """
    module_name, attr = split_target(name)
    if not is_allowed(module_name, allow):
        raise _refused(name, f"module {module_name!r} is {_outside(allow)}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise MethodNotFound(
            f"method {name!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise MethodNotFound(f"method {name!r}: module {module_name!r} has no {attr!r}") from None
    except Exception as exc:  # a module's __getattr__ may raise anything
        raise MethodNotFound(
            f"method {name!r}: module {module_name!r} has no {attr!r}: {exc}"
        ) from exc
    if inspect.isclass(target):
        raise _refused(name, f"{attr!r} is a class; a job runs functions, not classes")
    if not callable(target):
        raise MethodNotFound(f"method {name!r} is not callable (a {type(target).__name__})")
    origin = defined_in(target)
    if allow and (origin is None or not is_allowed(origin, allow)):
        raise _refused(name, f"{attr!r} is defined in module {origin!r}, {_outside(allow)}")
    return target


@functools.lru_cache(maxsize=1024)
def resolve(name: str, allow: tuple[str, ...] = ()) -> tuple[Callable[..., Any], bool]:
    """:func:`import_target` remembered: the callable and whether it is a coroutine function.

    A worker runs the same few methods over and over; resolving a name once saves the
    parse, the allow-list check and the attribute walk on every job. Only successes are
    remembered (an error is raised again, and retried, on the next call).

    Raises InvalidMethodName, MethodNotAllowed or MethodNotFound.
    """
    func = import_target(name, allow=allow)
    return func, inspect.iscoroutinefunction(func)


def unfindable(prefixes: Iterable[str]) -> list[tuple[str, str]]:
    """The allow-list ``prefixes`` that name no module this process can import, each with
    why (in a few words), in their order.

    A prefix may be a package prefix that is not itself a module, so this is for a
    warning, not a refusal. Looking a prefix up (:func:`importlib.util.find_spec`) imports
    its parent packages (``myapp`` for ``myapp.tasks``), not the module itself. Never raises.
    """
    missing = []
    for prefix in prefixes:
        name = prefix.rstrip(".")
        try:
            found = importlib.util.find_spec(name) is not None
            why = f"No module named {name!r}"
        except ModuleNotFoundError as exc:  # a parent package missing
            found, why = False, str(exc)
        except Exception as exc:  # a parent package failing to import, a malformed name
            found, why = False, f"{type(exc).__name__}: {exc}"
        if not found:
            missing.append((prefix, why))
    return missing
