"""Reading what a request says: query parameters and bodies, validated with clear 400s."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from tqueues import codec
from tqueues.errors import ValidationError
from tqueues.jobs import validate_queue_name

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def query_queue(request: web.Request) -> str:
    """The ``queue`` query parameter, validated."""
    return validate_queue_name(request.query.get("queue"))


def parse_json(raw: bytes | str, what: str, *, field: str | None = None) -> Any:
    """Strict JSON (see :mod:`tqueues.codec`) that every store keeps as it was sent.

    Raises ValidationError (400) for malformed JSON, an object that gives a key twice, an
    integer outside ±(2**53-1), and nesting the codec cannot write back (254 levels; it
    reads 1,024), naming where: ``what`` (``"the body"``) and the path inside it; the
    error's ``field`` is ``field`` if given, else the top-level member it is in.
    """
    try:
        return codec.loads_checked(raw)
    except codec.UnstorableJSON as exc:
        where = f" at {exc.path}" if exc.path else ""
        name = field if field is not None else exc.field
        details = {"field": name} if name is not None else {}
        raise ValidationError(
            f"{what} cannot be stored as sent{where}: {exc.message}", **details
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        details = {"field": field} if field is not None else {}
        raise ValidationError(f"{what} is not valid JSON: {exc}", **details) from None


#: The most fields a form body may have.
MAX_FORM_FIELDS = 1000


async def read_object(request: web.Request, *, form_json: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request body as a dict: a JSON object, or a form whose ``form_json`` fields hold JSON.

    A body that starts with ``{`` is read as JSON whatever its content type says (``curl -d``
    labels JSON as a form); ``application/x-www-form-urlencoded`` and ``multipart/form-data``
    bodies (``curl -d``, ``curl -F``) are read as forms of text fields (a file is refused).
    An empty body is ``{}``. Raises ValidationError (400) for anything else, a body that
    cannot be read (a broken chunked or compressed encoding) included; aiohttp answers 413
    for bodies over the application's limit.
    """
    if request.content_type == "multipart/form-data":
        pairs = await _multipart_pairs(request)
        return _form_fields(pairs, form_json) if pairs else {}
    try:
        raw = await request.read()
    except web.RequestPayloadError as exc:
        raise ValidationError(f"the request body cannot be read: {_reason(exc)}") from None
    if not raw.strip():
        return {}
    if request.content_type in FORM_TYPES and not raw.lstrip().startswith(b"{"):
        try:
            pairs = parse_qsl(
                raw.decode(),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            raise ValidationError("the form body is malformed") from None
        return _form_fields(pairs, form_json)
    body = parse_json(raw, "the body")
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _form_fields(pairs: list[tuple[str, str]], form_json: tuple[str, ...]) -> dict[str, Any]:
    """A form's fields as the body they stand for: ``form_json`` fields parsed as JSON.

    A field given twice is refused, as a JSON body's duplicated key is."""
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise ValidationError(f"form field '{name}' is given twice", field=name)
        fields[name] = (
            parse_json(value, f"form field '{name}'", field=name) if name in form_json else value
        )
    return fields


async def _multipart_pairs(request: web.Request) -> list[tuple[str, str]]:
    """The text fields of a ``multipart/form-data`` body, read from the request's stream.

    400 for a body aiohttp's reader cannot parse (no boundary, a broken part, a nested
    multipart, an unknown charset or encoding), a part without a name, a file, or more
    than MAX_FORM_FIELDS fields; 413 (from the reader) past the body limit.
    """
    pairs: list[tuple[str, str]] = []
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValidationError("a multipart form may not nest another multipart body")
            name = part.name
            if not name:
                raise ValidationError(
                    "every part of a multipart form needs a name "
                    "(Content-Disposition: form-data; name=...)"
                )
            if part.filename is not None:
                raise ValidationError(f"form field '{name}' must not be a file", field=name)
            if len(pairs) >= MAX_FORM_FIELDS:
                raise ValidationError(f"a form may have at most {MAX_FORM_FIELDS} fields")
            data = await part.read(decode=True)
            pairs.append((name, data.decode(part.get_charset(default="utf-8"))))
    except (ValidationError, web.HTTPRequestEntityTooLarge):
        raise
    except web.RequestPayloadError as exc:
        raise ValidationError(f"the request body cannot be read: {_reason(exc)}") from None
    # What aiohttp's multipart reader raises for what it cannot parse or decode.
    except (ValueError, LookupError, RuntimeError, TypeError, HttpProcessingError) as exc:
        raise ValidationError(f"the multipart body is malformed: {_reason(exc)}") from None
    return pairs


def _reason(exc: BaseException) -> str:
    """What a parsing exception says, on one line and short (it may quote the body)."""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "\u2026"
