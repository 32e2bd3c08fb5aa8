"""How this store's connections read the server's answers: with orjson.

The driver reads every answer (a write's changes, a batch of a changefeed, a read) with
its ``ReQLDecoder``: the standard library's JSON decoder with a Python hook called on
every object, to turn RethinkDB's pseudo-types (times, grouped data, binary) into Python
values. A dispatcher reads every change of the queues it follows, whoever made it, so
that hook runs on every job document of every change. :class:`AnswerDecoder` reads an
answer with orjson instead (about half the time of the driver's decoder for a batch of
job changes), and hands to the driver's decoder, unchanged, any answer that names a
pseudo-type or that orjson refuses: what it returns is what the driver's decoder would.

The pool passes it to every connection (``r.connect(json_decoder=AnswerDecoder)``); the
driver makes one per query, with the query's global options (``time_format`` and the
like), which only the driver's decoder reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rethinkdb.ast import ReQLDecoder

from tqueues import codec
from tqueues.stores.rethinkdb.documents import PSEUDO_TYPE_KEY


class AnswerDecoder:
    """A driver answer decoder (the ``json_decoder`` of ``r.connect``): the project's
    codec (:func:`tqueues.codec.loads`, orjson) for plain JSON, the driver's
    ``ReQLDecoder`` for an answer holding the text ``$reql_type$`` anywhere (a
    pseudo-type, or a string that merely contains it) or that orjson cannot read (then
    the driver's decoder reads it, or raises what it raises)."""

    __slots__ = ("_options",)

    def __init__(self, reql_format_opts: Mapping[str, Any] | None = None) -> None:
        self._options = reql_format_opts

    def decode(self, text: str) -> Any:
        """The value of the JSON ``text`` (one answer of the server), as the driver's
        decoder would return it. Raises ValueError for text that is not JSON."""
        if PSEUDO_TYPE_KEY not in text:
            try:
                return codec.loads(text)
            except codec.JSONDecodeError:
                pass  # the driver's decoder reads it, or says what is wrong
        return ReQLDecoder(self._options).decode(text)


__all__ = ["AnswerDecoder"]
