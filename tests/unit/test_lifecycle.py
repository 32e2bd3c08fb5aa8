"""The pure job transitions every store applies."""

from __future__ import annotations

import dataclasses

import pytest

from tqueues import lifecycle
from tqueues.errors import InvalidTransition, LeaseMismatch, ValidationError
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig, new_leases

NOW = 1_000_000.0


def pending(**options: object) -> JobRecord:
    new = NewJob.from_request({"queue": "q", "method": "m:f", **options})
    return lifecycle.create(new, QueueConfig("q", ttr=10, max_attempts=2), now=NOW)


def test_create_is_pending_or_delayed() -> None:
    assert pending().status is JobStatus.PENDING
    delayed = pending(delay=5)
    assert delayed.status is JobStatus.DELAYED and delayed.ready_at == NOW + 5
    assert lifecycle.promote(delayed, now=NOW + 5).status is JobStatus.PENDING
    with pytest.raises(InvalidTransition):
        lifecycle.promote(delayed, now=NOW + 1)


def test_claim_then_expire_counts_attempts_until_failed() -> None:
    job = lifecycle.claim(pending(), lease="a", worker=None, now=NOW)
    assert (job.status, job.attempts, job.lease_expires) == (JobStatus.STARTED, 1, NOW + 10)
    with pytest.raises(InvalidTransition):
        lifecycle.expire(job, now=NOW + 9)
    again = lifecycle.expire(job, now=NOW + 10)
    assert again.status is JobStatus.PENDING and again.lease is None
    last = lifecycle.claim(again, lease="b", worker=None, now=NOW + 11)
    buried = lifecycle.expire(last, now=NOW + 30)
    assert buried.status is JobStatus.BURIED and "attempt 2 of 2" in (buried.error or "")
    with pytest.raises(InvalidTransition):
        lifecycle.claim(buried, lease="c", worker=None, now=NOW)


def test_lease_rules() -> None:
    job = lifecycle.claim(pending(), lease="a", worker=None, now=NOW)
    with pytest.raises(LeaseMismatch):
        lifecycle.finish(job, lease="b", result=None, now=NOW)
    with pytest.raises(LeaseMismatch):
        lifecycle.finish(pending(), lease="a", result=None, now=NOW)
    done = lifecycle.finish(job, lease=None, result=1, now=NOW)
    with pytest.raises(InvalidTransition):
        lifecycle.update(done, {"x": 1}, lease=None, now=NOW)


def test_fail_uses_backoff_while_attempts_remain() -> None:
    job = lifecycle.claim(pending(), lease="a", worker=None, now=NOW)
    retried = lifecycle.fail(job, lease="a", error="E", traceback="T", now=NOW,
                             backoff=lambda n: 3.0 * n)  # fmt: skip
    assert (retried.status, retried.ready_at, retried.error) == (JobStatus.DELAYED, NOW + 3, "E")
    immediate = lifecycle.fail(job, lease="a", error="E", traceback=None, now=NOW,
                               backoff=lambda n: 0.0)  # fmt: skip
    assert immediate.status is JobStatus.PENDING


def test_update_refuses_owned_fields_and_touches_with_lease() -> None:
    job = lifecycle.claim(pending(), lease="a", worker=None, now=NOW)
    with pytest.raises(ValidationError, match="attempts"):
        lifecycle.update(job, {"attempts": 0}, lease="a", now=NOW)
    touched = lifecycle.update(job, {"p": 1}, lease="a", now=NOW + 5)
    assert touched.lease_expires == NOW + 15 and touched.extra == {"p": 1}
    assert lifecycle.update(job, {"p": 2}, lease=None, now=NOW + 5).lease_expires == NOW + 10


def test_release_does_not_count_the_attempt() -> None:
    job = lifecycle.claim(pending(), lease="a", worker=None, now=NOW)
    back = lifecycle.release(job, lease="a", delay=0, now=NOW)
    assert (back.status, back.attempts, back.lease) == (JobStatus.PENDING, 0, None)
    later = lifecycle.release(job, lease="a", delay=4, now=NOW)
    assert (later.status, later.ready_at) == (JobStatus.DELAYED, NOW + 4)


def test_to_dict_hides_the_lease_unless_asked() -> None:
    job = lifecycle.claim(pending(), lease="secret", worker=None, now=NOW)
    assert "lease" not in job.to_dict()
    assert job.to_dict(with_lease=True)["lease"] == "secret"
    assert job.to_dict()["status"] == "started"


def test_evolve_copies_with_changes_and_refuses_unknown_fields() -> None:
    job = lifecycle.create(NewJob(queue="q", method="m:f", args=[1]), QueueConfig("q"), now=5.0)
    changed = job.evolve(rev=7, event="updated")
    assert (changed.rev, changed.event, job.rev) == (7, "updated", 0)
    assert changed == dataclasses.replace(job, rev=7, event="updated")
    with pytest.raises(TypeError, match="revision"):
        job.evolve(revision=1)


def test_new_leases_are_distinct_128_bit_tokens() -> None:
    leases = new_leases(50)
    assert len(set(leases)) == 50
    assert all(len(lease) == 32 and int(lease, 16) >= 0 for lease in leases)


def test_every_transition_returns_the_next_revision() -> None:
    job = pending()
    assert job.rev == 0
    taken = lifecycle.claim(job, lease="a", worker="w", now=NOW)
    updated = lifecycle.update(taken, {"progress": 1}, lease="a", now=NOW)
    touched = lifecycle.touch(updated, lease="a", ttr=None, now=NOW)
    done = lifecycle.finish(touched, lease="a", result=1, now=NOW)
    assert [j.rev for j in (taken, updated, touched, done)] == [1, 2, 3, 4]
    # What a store writes is the revision after the one it read, copied only if need be.
    assert done.succeeding(touched) is done
    assert done.succeeding(job).rev == 1 and done.succeeding(job).status is JobStatus.FINISHED


def test_cancel_ends_a_waiting_job_and_flags_a_started_one() -> None:
    for job in (pending(), pending(delay=5), lifecycle.bury(pending(), lease=None, reason=None,
                                                            now=NOW)):  # fmt: skip
        cancelled = lifecycle.cancel(job, lease=None, now=NOW + 1)
        assert (cancelled.status, cancelled.event, cancelled.finished_at) == (
            JobStatus.CANCELLED, "cancelled", NOW + 1,
        )  # fmt: skip
        assert cancelled.status.is_final and cancelled.rev == job.rev + 1
        with pytest.raises(InvalidTransition, match="already cancelled"):
            lifecycle.cancel(cancelled, lease=None, now=NOW + 2)
        with pytest.raises(InvalidTransition):
            lifecycle.kick(cancelled, now=NOW + 2)
    started = lifecycle.claim(pending(max_attempts=5), lease="a", worker="w", now=NOW)
    flagged = lifecycle.cancel(started, lease=None, now=NOW + 1)
    assert (flagged.status, flagged.cancel_requested, flagged.lease) == (
        JobStatus.STARTED, True, "a",
    )  # fmt: skip
    assert flagged.to_dict()["cancel_requested"] is True
    assert lifecycle.cancel(flagged, lease=None, now=NOW + 2).status is JobStatus.STARTED
    backoff = lambda n: 1.0  # noqa: E731
    ends = [
        lifecycle.fail(flagged, lease="a", error="x", traceback=None, now=NOW + 2,
                       backoff=backoff),
        lifecycle.release(flagged, lease="a", delay=0, now=NOW + 2),
        lifecycle.bury(flagged, lease="a", reason=None, now=NOW + 2),
        lifecycle.expire(flagged, now=NOW + 100),
        lifecycle.cancel(flagged, lease="a", now=NOW + 2),
    ]  # fmt: skip
    assert {job.status for job in ends} == {JobStatus.CANCELLED}
    assert all(job.lease is None and job.attempts == 1 for job in ends)
    finished = lifecycle.finish(flagged, lease="a", result=1, now=NOW + 2)
    assert finished.status is JobStatus.FINISHED  # a finish that comes first wins
    with pytest.raises(LeaseMismatch):
        lifecycle.cancel(flagged, lease="b", now=NOW + 2)


def test_dependencies_wait_then_become_pending_delayed_or_buried() -> None:
    config = QueueConfig("q")
    waiting = lifecycle.create(NewJob("q", "m", after=["q/a"]), config, now=10.0)
    assert (waiting.status, waiting.after) == (JobStatus.WAITING, ["q/a"])
    assert "after" in waiting.to_dict() and "has_dependents" not in waiting.to_dict()
    pending = lifecycle.unblock(waiting, now=20.0)
    assert (pending.status, pending.ready_at, pending.event) == (
        JobStatus.PENDING,
        20.0,
        "promoted",
    )
    delayed = lifecycle.create(NewJob("q", "m", delay=30, after=["q/a"]), config, now=10.0)
    assert lifecycle.unblock(delayed, now=20.0).status is JobStatus.DELAYED
    buried = lifecycle.orphan(waiting, reason="prerequisite q/a is failed", now=20.0)
    assert (buried.status, buried.error) == (JobStatus.BURIED, "prerequisite q/a is failed")
    for step in (lifecycle.unblock, lambda job, now: lifecycle.orphan(job, reason="", now=now)):
        with pytest.raises(InvalidTransition):
            step(pending, now=20.0)
    with pytest.raises(InvalidTransition):  # no run of it is under way
        lifecycle.release(waiting, lease=None, delay=0, now=20.0)
    assert lifecycle.cancel(waiting, lease=None, now=20.0).status is JobStatus.CANCELLED
    # The flag: set once, never on a job that ended
    flagged = lifecycle.awaited(lifecycle.create(NewJob("q", "m"), config, now=1.0))
    assert (flagged.has_dependents, flagged.event, flagged.to_dict()["has_dependents"]) == (
        True, "awaited", True,
    )  # fmt: skip
    for job in (flagged, lifecycle.finish(flagged, lease=None, result=1, now=2.0)):
        with pytest.raises(InvalidTransition):
            lifecycle.awaited(job)
