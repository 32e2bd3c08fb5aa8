"""The JSON codec of tqueues: orjson, everywhere jobs are read or written.

Strict, as JSON is meant to be: NaN and Infinity are refused, nesting deeper than 1,024
levels is refused, strings must be valid UTF-8. :func:`loads` reads integers of up to 64
bits exactly (larger ones as floats). What a client sends the dispatcher is read with
:func:`loads_checked`, which also refuses what the stores could not keep as it was sent:
an object that gives a key twice (a parser keeps one of them, silently), an integer
outside ±(2**53-1) (the RethinkDB store, like JavaScript, keeps every number as a double,
which rounds them) and nesting deeper than :data:`MAX_DEPTH` (what orjson writes).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  #: a ValueError (and json.JSONDecodeError)
JSONEncodeError = orjson.JSONEncodeError  #: a TypeError

#: The largest integer every store keeps exactly (RethinkDB numbers are doubles).
MAX_SAFE_INTEGER = 2**53 - 1
#: The deepest nesting orjson writes (it reads up to 1,024 levels).
MAX_DEPTH = 254


class UnstorableJSON(ValueError):
    """Valid JSON the stores would not keep as it was sent.

    ``path`` says where (``args[0].n``; empty for the document itself), ``field`` names
    the member of the top-level object it is in (or the key given twice there), if any.
    """

    def __init__(self, message: str, path: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.field = field


class DuplicateKey(UnstorableJSON):
    """An object gives the same key twice."""


class UnsafeInteger(UnstorableJSON):
    """An integer outside ±(2**53-1)."""


class TooDeep(UnstorableJSON):
    """Nested deeper than :data:`MAX_DEPTH` levels."""


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON. Raises JSONEncodeError for what JSON cannot hold."""
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    """``value`` as a compact JSON string. Raises JSONEncodeError."""
    return orjson.dumps(value).decode()


def dumps_storable(value: Any) -> bytes:
    """``value`` as :func:`dumps` writes it, if the dispatcher would accept it; raises
    JSONEncodeError for an integer outside ±(2**53-1) too (:func:`loads_checked`)."""
    return orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)


def loads(data: bytes | str) -> Any:
    """Parse JSON. Raises JSONDecodeError (a ValueError) for anything malformed."""
    return orjson.loads(data)


#: Digits become "0", JSON's whitespace a space, and what may come before a number (a
#: colon, bracket, comma or minus) a colon, so that a substring search finds a number of
#: many digits (:data:`_LONG_RUN`; not the digits inside a hexadecimal id) or a quote
#: followed by whitespace.
_FOLD = bytes.maketrans(b"123456789\t\n\r[,-", b"000000000   :::")
#: 19 digits: the shortest integer that orjson reads as a float (below -2**63).
_LONG_RUN = b"0" * 19
_AFTER_COLON, _AFTER_SPACE = b":" + _LONG_RUN, b" " + _LONG_RUN


def loads_checked(data: bytes | str) -> Any:
    """Parse JSON as :func:`loads` does, refusing what the stores would not keep as sent.

    Raises JSONDecodeError for malformed JSON, :class:`DuplicateKey` for an object that
    gives a key twice, :class:`UnsafeInteger` for an integer outside ±(2**53-1) and
    :class:`TooDeep` for nesting deeper than :data:`MAX_DEPTH`.

    The common case costs a parse, a write and a few substring counts, all in C: every
    key of compact JSON ends in ``":``, and when neither the text nor what orjson writes
    back has a key followed by whitespace or a quote or colon spelled as a ``\\u`` escape,
    both hold that sequence once per key plus once per ``\\":`` inside strings, which they
    spell alike; so the text has more of them exactly when a key was dropped. Whatever
    that cannot decide (whitespace after a quote, such escapes, a number of 19 digits or
    more, which orjson may have read as a float, or an integer orjson will not write) is
    parsed again by the standard library, which reports every key and integer literal.
    """
    raw = data.encode() if isinstance(data, str) else data
    value = orjson.loads(raw)
    try:
        written: bytes | None = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        written = None  # an integer beyond 2**53, or nested too deeply
    folded = raw.translate(_FOLD)
    if (
        written is None
        or raw.count(b'":') != written.count(b'":')
        or _AFTER_COLON in folded
        or _AFTER_SPACE in folded
        or folded.startswith(_LONG_RUN)
        or b'" ' in folded
        or (b"\\u00" in raw and (b"\\u0022" in raw or b"\\u003a" in raw or b"\\u003A" in raw))
    ):
        _check_exactly(raw)
        if written is None:
            raise TooDeep(f"it is nested more than {MAX_DEPTH} levels deep")
    return value


class _Refused:
    """What the standard library's parse leaves where :func:`loads_checked` refuses."""

    __slots__ = ("error", "key", "message")

    def __init__(self, error: type[UnstorableJSON], message: str, key: str | None = None) -> None:
        self.error = error
        self.message = message
        self.key = key  #: the key given twice


def _integer(literal: str) -> int | _Refused:
    digits = literal.lstrip("-")
    # 2**53-1 has 16 digits and JSON has no leading zeros: only 16 need a comparison
    # (and a literal of thousands of digits is never converted).
    if len(digits) < 16 or (len(digits) == 16 and int(digits) <= MAX_SAFE_INTEGER):
        return int(literal)
    return _Refused(
        UnsafeInteger,
        f"the integer {_shorten(literal, 40)} is beyond ±{MAX_SAFE_INTEGER} (2**53-1), past "
        "which JSON numbers lose precision (RethinkDB and JavaScript keep them as doubles); "
        "send it as a string",
    )


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Refused:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            break
        seen.add(key)
    return _Refused(
        DuplicateKey, f"an object gives the key {_shorten(key, 64)!r} more than once", key
    )


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _check_exactly(raw: bytes) -> None:
    """Parse ``raw`` (valid JSON) again with the standard library, and raise for the first
    refused key or integer, in document order, with its path."""
    try:
        value = json.loads(raw, object_pairs_hook=_unique, parse_int=_integer)
    except RecursionError:
        raise TooDeep(f"it is nested more than {MAX_DEPTH} levels deep") from None
    # (path, the top-level key it is under, the value), depth first in document order.
    stack: list[tuple[str, str | None, Any]] = [("", None, value)]
    while stack:
        path, field, item = stack.pop()
        if isinstance(item, _Refused):
            raise item.error(item.message, path, field if path else item.key)
        if isinstance(item, dict):
            stack.extend(
                reversed([(_key_path(path, k), field if path else k, v) for k, v in item.items()])
            )
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", field, v) for i, v in enumerate(item)]))


def _key_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
