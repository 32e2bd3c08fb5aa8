"""Transport errors said in words a person reads (issue #21, D): what real failed requests
raise, turned into a short phrase, and the clients' DispatcherUnavailable built from it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tqueues.client import Client
from tqueues.client.errors_text import connection_error_text
from tqueues.errors import DispatcherUnavailable


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def failure_of(url: str, *, timeout: float = 5.0) -> BaseException:
    """What an aiohttp GET of ``url`` raises (it must raise)."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)):
                pass
        except Exception as exc:
            return exc
    pytest.fail(f"GET {url} did not fail")


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A port whose server accepts connections and never answers; its port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for writer in held:
            writer.close()


@pytest.fixture
async def hanging_up_server() -> AsyncIterator[int]:
    """A port whose server reads a request and closes the connection without answering."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_refused_connection() -> None:
    exc = await failure_of(f"http://127.0.0.1:{closed_port()}/")
    assert connection_error_text(exc) == "connection refused"


async def test_a_host_name_that_does_not_resolve() -> None:
    exc = await failure_of("http://tq-no-such-host.invalid/")
    text = connection_error_text(exc)
    assert text.startswith("cannot resolve host name 'tq-no-such-host.invalid'"), text


async def test_no_answer_in_time(silent_server: int) -> None:
    exc = await failure_of(f"http://127.0.0.1:{silent_server}/", timeout=0.2)
    assert connection_error_text(exc, timeout=0.2) == "no answer within 0.2 s"
    assert connection_error_text(exc) == "no answer in time"


async def test_a_connection_closed_without_an_answer(hanging_up_server: int) -> None:
    exc = await failure_of(f"http://127.0.0.1:{hanging_up_server}/")
    assert connection_error_text(exc) == "the connection closed before an answer"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="makes its certificate with openssl")
async def test_a_certificate_not_trusted(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        exc = await failure_of(f"https://127.0.0.1:{port}/")
    text = connection_error_text(exc)
    assert text.startswith("TLS certificate not trusted: "), text
    assert "self-signed certificate" in text, text


async def test_the_clients_message_says_where_and_what_in_words() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    client = Client(url)
    takes = client.take_stream()
    try:
        with pytest.raises(DispatcherUnavailable) as raised:
            await client.list_queues()
        with pytest.raises(DispatcherUnavailable) as raised_on_stream:
            await takes.take(["q"], 1, wait=0.0, worker="w")
    finally:
        await takes.close()
        await client.close()
    expected = f"cannot reach the dispatcher at {url}: connection refused"
    assert raised.value.message == expected
    assert raised_on_stream.value.message == expected
