"""The transitions of one job as the REST API offers them, shared by the single-job action
route and the batch of outcomes: a validated body (a model of
:mod:`tqueues.dispatcher.models`) made into the change the store applies.

Each action takes (store, lease, body) and returns the change (a Mutation) for
``store.apply`` (one job) or ``store.apply_many`` (a batch, one store write). The body is
validated before (by the route's model, or the batch's, every item first), so a batch
checks every item before it applies any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqueues.dispatcher import models as m
from tqueues.dispatcher.models import OUTCOME_ACTIONS
from tqueues.errors import ValidationError
from tqueues.stores.base import Mutation, Store

#: An action: (store, lease, validated body) → the change to apply to the job.
Action = Callable[[Store, str | None, Any], Mutation]

MAX_ERROR = 10_000  #: characters of a failure's ``error`` kept (and of a burial's reason).
MAX_TRACEBACK = 100_000  #: characters of a failure's ``traceback`` kept.


def finish_action(store: Store, lease: str | None, body: m.Finish) -> Mutation:
    """Finish the job with ``body.result``."""
    return store.finish_change(lease=lease, result=body.result)


def fail_action(store: Store, lease: str | None, body: m.Fail) -> Mutation:
    """Record a failed run: ``error``, ``traceback`` (kept to their limits), ``permanent``."""
    traceback = body.traceback[:MAX_TRACEBACK] if body.traceback is not None else None
    return store.fail_change(
        lease=lease, error=body.error[:MAX_ERROR], traceback=traceback, permanent=body.permanent
    )


def release_action(store: Store, lease: str | None, body: m.Release) -> Mutation:
    """Give the job back untried after ``delay``; it keeps its place."""
    return store.release_change(lease=lease, delay=body.delay, to_end=False)


def requeue_action(store: Store, lease: str | None, body: m.Release) -> Mutation:
    """Give the job back untried after ``delay``, to the end of the queue."""
    return store.release_change(lease=lease, delay=body.delay, to_end=True)


def touch_action(store: Store, lease: str | None, body: m.Touch) -> Mutation:
    """Extend the lease (required) by ``ttr`` seconds (default: the job's ttr)."""
    if lease is None:
        raise ValidationError("touch needs the job's 'lease'", field="lease")
    return store.touch_change(lease=lease, ttr=body.ttr)


def bury_action(store: Store, lease: str | None, body: m.Bury) -> Mutation:
    """Set the job aside until kicked, with an optional ``reason``."""
    reason = body.reason[:MAX_ERROR] if body.reason is not None else None
    return store.bury_change(lease=lease, reason=reason)


def kick_action(store: Store, lease: str | None, body: m.KickJob) -> Mutation:
    """Make a buried, failed or delayed job pending now (no lease: an operator's call); a
    buried or failed one with its attempts renewed (:func:`tqueues.lifecycle.kick`)."""
    return store.kick_change()


def cancel_action(store: Store, lease: str | None, body: m.Cancel) -> Mutation:
    """Cancel the job: ended at once unless started; a started one is flagged for its
    worker (with the lease: its worker stopped it, it ends now)."""
    return store.cancel_change(lease=lease)


#: Every action of ``POST .../jobs/{id}/{action}``.
ACTION_FUNCTIONS: dict[str, Action] = {
    "finish": finish_action,
    "fail": fail_action,
    "release": release_action,
    "requeue": requeue_action,
    "touch": touch_action,
    "bury": bury_action,
    "kick": kick_action,
    "cancel": cancel_action,
}

__all__ = ["ACTION_FUNCTIONS", "OUTCOME_ACTIONS", "Action"]
