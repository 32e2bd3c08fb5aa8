"""What the client makes of answers that are not the dispatcher's JSON (a proxy in front
of it, say): a typed error carrying the text, never a decoding crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tqueues.client import Client
from tqueues.errors import TqueuesError


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/html; charset=utf-8", b"<h1>502 Bad Gateway</h1>", "502 Bad Gateway"),
        ("text/plain; charset=no-such-charset", b"upstream down \xff", "upstream down"),
        ("text/plain; charset=latin-1", "d\xe9j\xe0 vu".encode("latin-1"), "d\xe9j\xe0 vu"),
    ],
)
async def test_a_non_json_error_answer_is_a_typed_error_with_its_text(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    content_type: str,
    body: bytes,
    expected: str,
) -> None:
    async def proxy_error(request: web.Request) -> web.Response:
        return web.Response(status=502, body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy_error)
    server = await aiohttp_server(app)
    async with Client(str(server.make_url("/"))) as client:
        with pytest.raises(TqueuesError) as raised:
            await client.stats("q")
    assert raised.value.details["status_code"] == 502
    assert expected in raised.value.message
