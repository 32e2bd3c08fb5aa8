"""Job ids as requests name them: what an id may be, checked once where it comes in.

A job id is what a store made it (32 hex digits), but a request may name a job by any
text. Ids no store could ever hold are refused at the boundary with one answer, on
every route and every store: a 400 ``bad_request`` naming the ``id`` field. Those are
ids with a NUL character (RethinkDB refuses a NUL in any key) and ids longer than 127
bytes of UTF-8 (RethinkDB's longest primary key). Any other id that names no job is a
404 ``job_not_found``, as it always was.

Stores do not rely on this check: asked for an id no job can have (see
:func:`storable`), the RethinkDB store answers JobNotFound, as the embedded store does,
rather than letting the server refuse the key (which would read as an outage).
"""

from __future__ import annotations

from tqueues.errors import ValidationError
from tqueues.limits import MAX_ID_BYTES


def problem(job_id: object) -> str | None:
    """What makes ``job_id`` an id no job can have (a phrase), or None if a job could
    have it: a non-empty string of at most :data:`MAX_ID_BYTES` bytes of UTF-8 without a
    NUL character."""
    if not isinstance(job_id, str) or not job_id:
        return "must be a job id: a non-empty string"
    if "\x00" in job_id:
        return "must not contain a NUL character (no job has such an id)"
    try:
        size = len(job_id.encode())
    except UnicodeEncodeError:  # a lone surrogate: not text any store keeps
        return "must be text that UTF-8 can encode"
    if size > MAX_ID_BYTES:
        return f"is too long: a job id has at most {MAX_ID_BYTES} bytes of UTF-8"
    return None


def storable(job_id: str) -> bool:
    """Whether a job could have ``job_id`` (see :func:`problem`)."""
    return problem(job_id) is None


def validate_job_id(job_id: object, *, field: str = "id", where: str = "") -> str:
    """``job_id`` if a job could have it; else :class:`ValidationError` (400) naming
    ``field`` and saying what is wrong with it (see :func:`problem`). ``where`` (such as
    ``outcomes[2]``) prefixes the message and is the error's ``index``."""
    wrong = problem(job_id)
    if wrong is None and isinstance(job_id, str):
        return job_id
    if where:
        raise ValidationError(f"{where}: '{field}' {wrong}", index=where, field=field)
    raise ValidationError(f"'{field}' {wrong}", field=field)


__all__ = ["MAX_ID_BYTES", "problem", "storable", "validate_job_id"]
