"""The JSON codec of tqueues: orjson, everywhere jobs are read or written.

Strict, as JSON is meant to be: NaN and Infinity are refused, nesting deeper than 1,024
levels is refused, strings must be valid UTF-8. Integers are 64-bit (larger ones are
refused when written; orjson reads them as floats, as RethinkDB and browsers do).
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  #: a ValueError (and json.JSONDecodeError)
JSONEncodeError = orjson.JSONEncodeError  #: a TypeError


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON. Raises JSONEncodeError for what JSON cannot hold."""
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    """``value`` as a compact JSON string. Raises JSONEncodeError."""
    return orjson.dumps(value).decode()


def loads(data: bytes | str) -> Any:
    """Parse JSON. Raises JSONDecodeError (a ValueError) for anything malformed."""
    return orjson.loads(data)
