"""Reading what a request says: query parameters and bodies, validated with clear 400s."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tqueues import codec
from tqueues.errors import ValidationError
from tqueues.ids import validate_job_id
from tqueues.jobs import validate_queue_name

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def query_queue(request: web.Request) -> str:
    """The ``queue`` query parameter, validated."""
    return validate_queue_name(request.query.get("queue"))


def query_id(request: web.Request) -> str:
    """The ``id`` query parameter (required), an id a job could have (400 otherwise)."""
    job_id = request.query.get("id")
    if not job_id:
        raise ValidationError("the 'id' parameter is required", field="id")
    return validate_job_id(job_id)


def query_float(request: web.Request, name: str, default: float, *, high: float) -> float:
    """A non-negative number query parameter, at most ``high``."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"'{name}' must be a number of seconds", field=name) from None
    if not math.isfinite(value) or not 0 <= value <= high:
        raise ValidationError(f"'{name}' must be between 0 and {high:g}", field=name)
    return value


#: The deepest nesting the codec writes (it reads deeper): a body must be storable.
MAX_STORED_DEPTH = 254


def parse_json(raw: bytes | str, what: str) -> Any:
    """Strict JSON (see :mod:`tqueues.codec`) that can also be written back: the codec
    reads deeper nesting (1,024 levels) than it writes (254), and a value that could not
    be stored must be refused here, not fail later as a 500."""
    try:
        value = codec.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= MAX_STORED_DEPTH:
        return value  # cannot nest deeper than it has brackets: no need to write it back
    try:
        codec.dumps(value)
    except TypeError as exc:  # JSONEncodeError: nested too deeply
        raise ValidationError(f"{what} cannot be stored as JSON: {exc}") from None
    return value


async def read_object(request: web.Request, *, form_json: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request body as a dict: a JSON object, or a form whose ``form_json`` fields hold JSON.

    A body that starts with ``{`` is read as JSON whatever its content type says (``curl -d``
    labels JSON as a form). An empty body is ``{}``. Raises ValidationError for anything
    else; aiohttp answers 413 for bodies over the application's limit.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type in FORM_TYPES and not raw.lstrip().startswith(b"{"):
        pairs: list[tuple[str, Any]]
        if request.content_type == "multipart/form-data":
            pairs = [(k, v) for k, v in (await request.post()).items()]
        else:
            try:
                pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                raise ValidationError("the form body is malformed") from None
        fields: dict[str, Any] = {}
        for name, value in pairs:
            if not isinstance(value, str):
                raise ValidationError(f"form field '{name}' must not be a file", field=name)
            fields[name] = parse_json(value, f"form field '{name}'") if name in form_json else value
        return fields
    body = parse_json(raw, "the body")
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body
