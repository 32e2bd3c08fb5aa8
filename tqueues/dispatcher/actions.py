"""The transitions of one job as the REST API offers them, shared by the single-job action
route and the batch of outcomes: validate a request body, then apply it through the store.

Each action takes (store, lease, body), validates the body at once (raising
ValidationError before anything is applied) and returns the change (a Mutation) for
``store.apply`` (one job) or ``store.apply_many`` (a batch, one store write). Splitting the
two lets a batch check every item before it applies any.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tqueues.errors import (
    ValidationError,
)
from tqueues.jobs import (
    MAX_DELAY,
    MAX_TTR,
    JobStatus,
)
from tqueues.lifecycle import KICKABLE
from tqueues.stores.base import Mutation, Store

#: An action: (store, lease, body) → the change to apply to the job (see below).
Action = Callable[[Store, str | None, dict[str, Any]], Mutation]


def number_field(body: dict[str, Any], name: str, *, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"'{name}' must be a number of seconds", field=name)
    if not 0 <= value <= high:
        raise ValidationError(f"'{name}' must be between 0 and {high:g}", field=name)
    return float(value)


def string_field(body: dict[str, Any], name: str, *, limit: int) -> str | None:
    value = body.get(name)
    if not isinstance(value, str | None):
        raise ValidationError(f"'{name}' must be a string", field=name)
    return value[:limit] if value is not None else None


def only(body: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown field(s) for {what}: {', '.join(unknown)}", fields=unknown)


# -- the transitions of one job, shared by JobAction and Outcomes ------------------------------
#
# Each takes (store, lease, body), validates the body at once (raising ValidationError
# before anything is applied) and returns the change for the store to apply.


def finish_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Finish the job with ``body["result"]``."""
    only(body, ("result",), "finish")
    return store.finish_change(lease=lease, result=body.get("result"))


def fail_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Record a failed run: ``error`` (required), ``traceback``, ``permanent``."""
    only(body, ("error", "traceback", "permanent"), "fail")
    error = string_field(body, "error", limit=10_000)
    if not error:
        raise ValidationError("'error' is required", field="error")
    permanent = body.get("permanent", False)
    if not isinstance(permanent, bool):
        raise ValidationError("'permanent' must be true or false", field="permanent")
    return store.fail_change(
        lease=lease,
        error=error,
        traceback=string_field(body, "traceback", limit=100_000),
        permanent=permanent,
    )


def _give_back(store: Store, lease: str | None, body: dict[str, Any], *, to_end: bool) -> Mutation:
    only(body, ("delay",), "requeue" if to_end else "release")
    delay = number_field(body, "delay", high=MAX_DELAY) or 0.0
    return store.release_change(lease=lease, delay=delay, to_end=to_end)


def release_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Give the job back untried after ``delay``; it keeps its place."""
    return _give_back(store, lease, body, to_end=False)


def requeue_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Give the job back untried after ``delay``, to the end of the queue."""
    return _give_back(store, lease, body, to_end=True)


def touch_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Extend the lease (required) by ``ttr`` seconds (default: the job's ttr)."""
    only(body, ("ttr",), "touch")
    if lease is None:
        raise ValidationError("touch needs the job's 'lease'", field="lease")
    ttr = number_field(body, "ttr", high=MAX_TTR)
    if ttr is not None and ttr < 0.1:
        raise ValidationError(f"'ttr' must be between 0.1 and {MAX_TTR:g}", field="ttr")
    return store.touch_change(lease=lease, ttr=ttr)


def bury_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Set the job aside until kicked, with an optional ``reason``."""
    only(body, ("reason",), "bury")
    reason = string_field(body, "reason", limit=10_000)
    return store.bury_change(lease=lease, reason=reason)


def kick_action(store: Store, lease: str | None, body: dict[str, Any]) -> Mutation:
    """Make a buried, failed or delayed job pending now (no lease: an operator's call); a
    buried or failed one with its attempts renewed (:func:`tqueues.lifecycle.kick`)."""
    only(body, (), "kick")
    return store.kick_change()


def kick_status(value: Any) -> JobStatus | None:
    """The ``status`` of a queue's kick (``POST /queues/{name}/kick``): None when absent
    (buried jobs, else delayed ones, as beanstalkd), else one of buried, failed or
    delayed; 400 naming ``status`` otherwise."""
    if value is None:
        return None
    kickable = [status.value for status in KICKABLE]
    if value not in kickable:
        raise ValidationError(f"'status' of a kick must be {', '.join(kickable)}", field="status")
    return JobStatus(value)


#: Every action of ``POST .../jobs/{id}/{action}``.
ACTION_FUNCTIONS: dict[str, Action] = {
    "finish": finish_action,
    "fail": fail_action,
    "release": release_action,
    "requeue": requeue_action,
    "touch": touch_action,
    "bury": bury_action,
    "kick": kick_action,
}
#: The actions a batch of outcomes may carry: how a run ends (a worker's calls).
OUTCOME_ACTIONS = ("finish", "fail", "release", "requeue", "bury")
