"""Unique jobs on RethinkDB (#25): the ``tqueues_keys`` table, one document per key a
live job holds.

RethinkDB writes one document atomically, never two, and a queue's jobs are a table of
their own: a unique secondary index on the jobs cannot exist (RethinkDB has none), and a
job and its key cannot change in one write. So a key is held by a document of its own in
one table for every queue, its primary key made of the queue and the key (so the server
refuses a second insert of it, whoever makes it at whatever instant)::

    {"id": "QUEUE/HASH", "queue": ..., "key": ..., "job": id, "rev": n, "at": t, "token": ...}

``job`` is the job that holds the key, ``rev`` its revision when it claimed it (0 for a
put; a job made live again, by a kick say, claims it at the revision it is read at),
``at`` when (epoch seconds, this process's clock, as leases are) and ``token`` names the
claim. The key is hashed (BLAKE2b, 24 bytes) so that any key of up to MAX_KEY characters
fits RethinkDB's 127 bytes of primary key. Jobs without a key never touch this table.

The rules, each step one atomic write of one document:

* A claim (:meth:`Keys.claim`) is made *before* its job becomes live (a put inserts the
  key's document, then the job), and inserts the document with ``conflict="error"``.
  If one is there, the job it names is read: live, it holds the key (the put is a
  duplicate, a kick is refused); ended since its claim (its ``rev`` past the claim's) or
  the claim older than :data:`GRACE` with its job missing or not yet live again (the
  claimant died between its two writes), the claim is stale and is taken over by a
  conditional replace (still that ``token``); otherwise a claim is under way in another
  process, whose job write follows within milliseconds: it is read again until then.
* A job that ends (finished, buried, failed, cancelled, deleted; by whoever ends it)
  then deletes its key's document if it still names the job under a claim made before
  the revision that ended it (:meth:`Keys.release`): never a claim made since, by
  another job or by a revival of this one. That second write may never happen (a
  crash): the rule above then takes the key over at the next claim, so no key stays
  locked by a job that ended.
* A queue's truncation or drop deletes its keys' documents (one range of the primary key).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import clock
from tqueues.errors import StoreUnavailable
from tqueues.jobs import JobRecord, new_lease
from tqueues.retry import Backoff
from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.rethinkdb.pool import first_error

log = logging.getLogger("tqueues.stores.rethinkdb")

KEYS_TABLE = "tqueues_keys"
#: Seconds a claim whose job is not (yet) live is waited for before it is taken over:
#: longer than a put's two writes take, even on a loaded server; and the clock skew
#: dispatchers sharing a database may have (their leases assume as much).
GRACE = 10.0
#: Reads of a claim under way before giving up (StoreUnavailable): past GRACE, whatever
#: the waits.
MAX_LOOKS = 1000

Run = Callable[[RqlQuery], Awaitable[Any]]
#: Reads a job: (queue, id) -> the job, or None if it is gone (or its queue).
ReadJob = Callable[[str, str], Awaitable[JobRecord | None]]


def key_id(queue: str, key: str) -> str:
    """The primary key of ``key``'s document in ``queue``: ``queue/`` and 48 hex digits."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=24)
    return f"{queue}/{digest.hexdigest()}"


def document(job: JobRecord) -> dict[str, Any]:
    """The claim of ``job`` (as read: its ``rev``) on its key, made now."""
    assert job.key is not None
    return {"id": key_id(job.queue, job.key), "queue": job.queue, "key": job.key,
            "job": job.id, "rev": job.rev, "at": clock.now(), "token": new_lease()}  # fmt: skip


def of_queue(table: Any, queue: str) -> RqlQuery:
    """The key documents of ``queue`` (ids ``queue/...``: '0' follows '/')."""
    return table.between(f"{queue}/", f"{queue}0")


def take_over(table: Any, stale: Mapping[str, Any], claim: dict[str, Any], *,
              durability: str) -> RqlQuery:  # fmt: skip
    """Replace the ``stale`` claim by ``claim`` if the document still holds it (its
    ``token``): ``replaced`` 1 if so."""
    return table.get(stale["id"]).replace(
        lambda row: r.branch(
            row.eq(None), None, r.branch(row["token"].eq(stale["token"]), r.expr(claim), row)
        ),
        durability=durability,
    )


def delete_claim(table: Any, doc_id: str, token: str, *, durability: str) -> RqlQuery:
    """Delete the document if it still holds the claim ``token``."""
    return table.get(doc_id).replace(
        lambda row: r.branch(row.eq(None), None, r.branch(row["token"].eq(token), None, row)),
        durability=durability,
    )


def release(table: Any, job: JobRecord, before_rev: int, *, durability: str) -> RqlQuery:
    """Delete the document of ``job``'s key if it names ``job`` under a claim made at a
    revision before ``before_rev``."""
    assert job.key is not None
    return table.get(key_id(job.queue, job.key)).replace(
        lambda row: r.branch(
            row.eq(None),
            None,
            r.branch(row["job"].eq(job.id) & row["rev"].lt(before_rev), None, row),
        ),
        durability=durability,
    )


class Keys:
    """The key table of one store: claims and releases (see the module's docstring).

    ``table`` gives the table (it raises StoreUnavailable when the table cannot be used),
    ``run`` runs a query, ``read_job`` reads a job (None if it is gone)."""

    def __init__(
        self, table: Callable[[], Any], run: Run, read_job: ReadJob, *, durability: str
    ) -> None:
        self.table = table
        self.run = run
        self.read_job = read_job
        self.durability = durability

    async def claim(self, job: JobRecord) -> tuple[str | None, JobRecord | None]:
        """Claim ``job``'s key for it, before it becomes live (``job`` as read, or as it
        will be inserted): ``(token, None)`` once claimed (the token names the claim, for
        :meth:`drop`; None when the claim found was already this job's at this revision),
        or ``(None, holder)``: the live job that holds the key (nothing changed).

        Waits while another process's claim is under way (at most GRACE seconds). Raises
        StoreUnavailable."""
        table = self.table()
        mine = document(job)
        backoff = Backoff(base=0.005, cap=0.1)
        for _ in range(MAX_LOOKS):
            result = await self.run(table.insert(r.expr(mine), conflict="error",
                                                 durability=self.durability))  # fmt: skip
            if result.get("inserted") == 1:
                return mine["token"], None
            if "Duplicate primary key" not in str(result.get("first_error", "")):
                raise StoreUnavailable(f"RethinkDB did not store the key of job {job.id}: "
                                       f"{first_error(result)}")  # fmt: skip
            held = await self.run(table.get(mine["id"]))
            if held is None:
                continue  # released meanwhile: claim it
            if held.get("job") == job.id and held.get("rev") == job.rev:
                return None, None  # this job's, at this revision (another writer of it)
            holder = None
            if held.get("job") != job.id:
                holder = await self.read_job(job.queue, str(held.get("job")))
            if holder is not None and holder.holds_key() and holder.key == job.key:
                return None, holder
            if not self._stale(held, holder, job):
                await backoff.sleep()  # a claim under way: its job comes
                continue
            replaced = await self.run(take_over(table, held, mine, durability=self.durability))
            if replaced.get("replaced") == 1:
                log.info("job %s of queue %r took over the key %r from job %s, which %s",
                         job.id, job.queue, job.key, held.get("job"),
                         "ended" if holder is not None else "is gone")  # fmt: skip
                return mine["token"], None
        raise StoreUnavailable(f"the key {job.key!r} of queue {job.queue!r} could not be "
                               "claimed: its claim kept changing")  # fmt: skip

    @staticmethod
    def _stale(held: Mapping[str, Any], holder: JobRecord | None, job: JobRecord) -> bool:
        """Whether the claim ``held`` (its job ``holder`` not live, or gone: None) may be
        taken over by ``job``."""
        if held.get("job") == job.id:
            return True  # an earlier claim of this job, which is not live as read
        if holder is not None and holder.rev > int(held.get("rev", 0)):
            return True  # its job ended after claiming it
        return clock.now() - float(held.get("at", 0.0)) >= GRACE  # its claimant died

    async def drop(self, job: JobRecord, token: str | None) -> None:
        """Undo the claim ``token`` of ``job``'s key (its job was not written); a failure
        is logged (the claim is then stale after GRACE)."""
        if token is None or job.key is None:
            return
        query = delete_claim(self.table(), key_id(job.queue, job.key), token,
                             durability=self.durability)  # fmt: skip
        try:
            await self.run(query)
        except StoreUnavailable as exc:
            log.warning("the key %r of queue %r stays claimed for %g s: %s", job.key, job.queue,
                        GRACE, exc.message)  # fmt: skip

    async def release(self, job: JobRecord, before_rev: int) -> None:
        """``job`` ended at revision ``before_rev`` (or was deleted: its rev + 1): free
        its key (:func:`release`). A failure is logged: the next claim takes the key
        over (its job ended)."""
        if job.key is None:
            return
        try:
            await self.run(release(self.table(), job, before_rev, durability=self.durability))
        except StoreUnavailable as exc:
            log.warning("the key %r of queue %r was not released (the next put of it takes "
                        "it over): %s", job.key, job.queue, exc.message)  # fmt: skip

    async def forget_queue(self, queue: str) -> None:
        """Delete every key document of ``queue`` (its jobs went)."""
        await self.run(of_queue(self.table(), queue).delete(durability=self.durability))


__all__ = ["GRACE", "KEYS_TABLE", "Keys", "document", "key_id", "of_queue", "release"]
