"""The RethinkDB store's answer decoder reads what the driver's own decoder reads."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rethinkdb.ast import ReQLDecoder
from rethinkdb.errors import ReqlDriverError

from tqueues.stores.rethinkdb.wire import AnswerDecoder

#: JSON values as the server sends them: finite doubles, integers within what a double
#: holds exactly, any text (the key of pseudo-types among it).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.just("$reql_type$"),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text() | st.just("$reql_type$"), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(JSON_VALUES)
def test_it_reads_any_answer_as_the_drivers_decoder(value: Any) -> None:
    text = json.dumps({"t": 1, "r": [value]}, ensure_ascii=False)
    try:
        expected = ReQLDecoder().decode(text)
    except ReqlDriverError as refused:  # an object of a pseudo-type it does not know
        with pytest.raises(ReqlDriverError) as ours:
            AnswerDecoder().decode(text)
        assert str(ours.value) == str(refused)
    else:
        assert AnswerDecoder().decode(text) == expected


def test_pseudo_types_are_the_drivers_values() -> None:
    epoch = 1_700_000_000.5
    answer = json.dumps(
        {"t": 1, "r": [{"at": {"$reql_type$": "TIME", "epoch_time": epoch, "timezone": "+00:00"}}]}
    )
    # A time is a datetime, as the driver makes it
    (row,) = AnswerDecoder().decode(answer)["r"]
    assert isinstance(row["at"], datetime.datetime)
    assert row["at"].timestamp() == epoch
    # And with the query's time_format "raw", the object as sent
    (raw,) = AnswerDecoder({"time_format": "raw"}).decode(answer)["r"]
    assert raw["at"]["epoch_time"] == epoch


def test_what_orjson_refuses_is_read_by_the_driver() -> None:
    # An escaped lone surrogate is JSON the standard library reads (orjson refuses it)
    text = '{"t": 1, "r": ["\\ud800"]}'
    assert AnswerDecoder().decode(text) == ReQLDecoder().decode(text) == {"t": 1, "r": ["\ud800"]}
    # And text that is not JSON is the driver's error, a ValueError
    with pytest.raises(ValueError):
        AnswerDecoder().decode('{"t": 1, "r": [')
