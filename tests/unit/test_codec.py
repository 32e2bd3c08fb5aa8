"""``codec.loads_checked``: what the stores could not keep as sent is refused, naming where;
its fast path decides exactly as a parse that sees every key and integer literal."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqueues import codec


def reference(raw: bytes) -> str | None:
    """What the standard library's parse says of ``raw``: "duplicate", "integer" or None."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            found.append("duplicate")
        return dict(items)

    def integer(literal: str) -> int:
        value = int(literal)
        if abs(value) > 2**53 - 1:
            found.append("integer")
        return value

    json.loads(raw, object_pairs_hook=pairs, parse_int=integer)
    return found[0] if found else None


def verdict(raw: bytes) -> str | None:
    try:
        codec.loads_checked(raw)
    except codec.DuplicateKey:
        return "duplicate"
    except codec.UnsafeInteger:
        return "integer"
    return None


KEYS = ["a", "method", "", "k:v", 'q"', "x\\", "é", " ", "\u2028"]
#: Strings meant to confuse a count of ``":``: quotes, colons, backslashes, escapes.
STRINGS = ['":', '\\":', '"', ":", "\\", '" :', "m:f", "é", "\\u0022:", "12345678901234567890"]
INTEGERS = [
    0,
    -1,
    2**53 - 1,
    -(2**53 - 1),
    2**53,
    -(2**53),
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    12345,
]


def render(value: Any, rng: random.Random) -> str:
    """``value`` as JSON text, spelled in one of the ways clients spell it: compact or
    spaced, quotes and colons sometimes as ``\\u`` escapes, whitespace around colons."""
    space = rng.choice(["", " ", "\n  ", "\t"])
    if isinstance(value, Duplicated):
        items = value.items
        inner = ("," + space).join(
            f"{render_string(k, rng)}{rng.choice(['', ' ', chr(10)])}:{space}{render(v, rng)}"
            for k, v in items
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ("," + space).join(render(v, rng) for v in value) + "]"
    if isinstance(value, str):
        return render_string(value, rng)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def render_string(text: str, rng: random.Random) -> str:
    body = json.dumps(text, ensure_ascii=rng.random() < 0.5)[1:-1]
    if rng.random() < 0.3:
        body = body.replace('\\"', "\\u0022").replace(":", rng.choice(["\\u003a", "\\u003A"]))
    return '"' + body + '"'


class Duplicated:
    """An object as a list of (key, value) pairs, which may give a key twice."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items


leaves = (
    st.sampled_from(INTEGERS)
    | st.integers()
    | st.sampled_from(STRINGS)
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | st.booleans()
)
documents = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(
            st.tuples(st.sampled_from(KEYS) | st.text(max_size=4), children), max_size=4
        ).map(Duplicated)
    ),
    max_leaves=16,
)


@settings(max_examples=1500, deadline=None)
@given(documents, st.randoms(use_true_random=False))
def test_the_verdict_is_the_exact_parse_s(document: Any, rng: random.Random) -> None:
    raw = render(document, rng).encode()
    expected = reference(raw)
    assert verdict(raw) == expected or (
        expected is not None and verdict(raw) is not None  # both refuse; the first found wins
    ), raw


@pytest.mark.parametrize(
    ("raw", "error", "path", "field"),
    [
        (b'{"method":"m:f","method":"os:system"}', codec.DuplicateKey, "", "method"),
        (b'{"method":"m:f", "method" :"os:system"}', codec.DuplicateKey, "", "method"),
        (b'{"kwargs":{"a":[{"b":1,"b":2}]}}', codec.DuplicateKey, "kwargs.a[0]", "kwargs"),
        # a duplicate hidden behind a \u-escaped quote and colon in a string
        (b'{"m":1,"m":2,"s":"\\u0022\\u003a"}', codec.DuplicateKey, "", "m"),
        (b'{"args":[1,9007199254740992]}', codec.UnsafeInteger, "args[1]", "args"),
        (b'{"args":[-9007199254740992]}', codec.UnsafeInteger, "args[0]", "args"),
        (b'{"result":{"n":18446744073709551616}}', codec.UnsafeInteger, "result.n", "result"),
        (b'{"x y":{"n":-9223372036854775809}}', codec.UnsafeInteger, '["x y"].n', "x y"),
        (b"[1, " + b"9" * 300 + b"]", codec.UnsafeInteger, "[1]", None),
        (b"18446744073709551616", codec.UnsafeInteger, "", None),
        (b"[-9223372036854775809]", codec.UnsafeInteger, "[0]", None),
        (b"[" * 255 + b"]" * 255, codec.TooDeep, "", None),
        (b"[" * 1000 + b"]" * 1000, codec.TooDeep, "", None),
    ],
)
def test_refusals_say_where(
    raw: bytes, error: type[codec.UnstorableJSON], path: str, field: str | None
) -> None:
    with pytest.raises(error) as refused:
        codec.loads_checked(raw)
    assert (refused.value.path, refused.value.field) == (path, field)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"args":[9007199254740991,-9007199254740991,1e300,1.5]}',
        b'{"id":"12345678901234567890123","s":"\\":\\" :"}',
        b'{"a": 1, "b": {"c": [1, 2, {"d": "e"}]}}',
        b"[" * 254 + b"]" * 254,
        '{"é":"\\u00e9"}'.encode(),
    ],
)
def test_what_the_stores_keep_as_sent_passes_unchanged(raw: bytes) -> None:
    assert codec.loads_checked(raw) == json.loads(raw)


def test_malformed_json_is_still_a_decode_error() -> None:
    for raw in (b"{bad", b'{"a": NaN}', b"\xff"):
        with pytest.raises(codec.JSONDecodeError):
            codec.loads_checked(raw)


def test_dumps_storable_refuses_what_loads_checked_refuses() -> None:
    assert codec.dumps_storable([2**53 - 1]) == b"[9007199254740991]"
    with pytest.raises(codec.JSONEncodeError):
        codec.dumps_storable({"n": 2**53})
