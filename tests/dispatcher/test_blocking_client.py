"""BlockingClient's transport (libcurl in the calling thread) against real HTTP servers:
what each call sends, one keep-alive connection per thread, reconnection, timeouts, answers
that are not the dispatcher's JSON, and a child process after fork."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.acceptance.test_reliability import free_port
from tqueues.client import BlockingClient
from tqueues.errors import DispatcherUnavailable, JobNotFound, TqueuesError

Server = Callable[..., Awaitable[TestServer]]
#: An answer every call of the test below can read.
ANSWER = {"id": "j1", "queue": "q", "status": "pending", "deleted": 0, "jobs": []}


class Recorder:
    """A stand-in dispatcher that answers every request with ``answer`` and records what
    came: the method, the path with its query, the headers, the body, and the client's
    address (one per connection)."""

    def __init__(self, answer: Any = ANSWER, status: int = 200) -> None:
        self.answer, self.status = answer, status
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.requests.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "body": await request.read(),
                "peer": request.transport.get_extra_info("peername"),
            }
        )
        return web.json_response(self.answer, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def test_each_call_sends_the_method_path_query_and_body_of_the_asyncio_client(
    aiohttp_server: Server,
) -> None:
    recorder = Recorder()
    server = await aiohttp_server(recorder.app())

    def calls() -> None:
        with BlockingClient(str(server.make_url("/")), token="t" * 32) as client:
            client.get("q", "a b")
            client.delete("q", "j1")
            client.truncate("q")
            client.create_queue("q", ttr=5)
            client.update("q", "j1", {"progress": 1}, lease="L")
            client.take_any(["a", "b"], 2, wait=0.5)

    await asyncio.to_thread(calls)
    seen = [(r["method"], r["path"], r["body"]) for r in recorder.requests]
    assert seen == [
        ("GET", "/queues/q/jobs/a%20b", b""),
        ("DELETE", "/queues/q/jobs/j1", b""),
        ("POST", "/queues/q/truncate", b""),
        ("PUT", "/queues/q", b'{"ttr":5}'),
        ("PATCH", "/queues/q/jobs/j1?lease=L", b'{"progress":1}'),
        ("POST", "/take?queue=a&queue=b&wait=0.5&count=2", b""),
    ]
    for request in recorder.requests:
        headers = request["headers"]
        assert headers["Authorization"] == "Bearer " + "t" * 32
        assert "Expect" not in headers
        if request["body"]:
            assert headers["Content-Type"] == "application/json"
        if request["method"] == "POST" and not request["body"]:
            assert headers["Content-Length"] == "0"


async def test_each_thread_keeps_one_connection_for_all_its_calls(aiohttp_server: Server) -> None:
    recorder = Recorder({"status": "ok"})
    server = await aiohttp_server(recorder.app())

    def calls() -> None:
        with BlockingClient(str(server.make_url("/"))) as client:
            for _ in range(5):
                client.health()
            other = asyncio.run(asyncio.to_thread(lambda: [client.health() for _ in range(3)]))
            assert len(other) == 3
            client.health()

    await asyncio.to_thread(calls)
    peers = [r["peer"] for r in recorder.requests]
    assert len(peers) == 9
    main, other = peers[0], peers[5]
    assert peers == [main] * 5 + [other] * 3 + [main]
    assert other != main


async def test_a_connection_the_dispatcher_closed_is_opened_again(aiohttp_server: Server) -> None:
    recorder = Recorder({"status": "ok"})
    port = free_port()
    server = await aiohttp_server(recorder.app(), port=port)
    client = BlockingClient(str(server.make_url("/")))
    try:
        await asyncio.to_thread(client.health)
        # When the dispatcher restarts between two calls (its connections closed)
        await server.close()
        with pytest.raises(DispatcherUnavailable, match="cannot reach the dispatcher"):
            await asyncio.to_thread(client.health)
        await aiohttp_server(recorder.app(), port=port)
        # Then the next call connects again
        assert (await asyncio.to_thread(client.health)) == {"status": "ok"}
    finally:
        await asyncio.to_thread(client.close)
    assert len({r["peer"] for r in recorder.requests}) == 2


async def test_a_call_gives_up_after_its_timeout(aiohttp_server: Server) -> None:
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/health", stuck)
    server = await aiohttp_server(app)
    client = BlockingClient(str(server.make_url("/")), timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(DispatcherUnavailable, match=r"timed out|Timeout"):
            await asyncio.to_thread(client.health)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        await asyncio.to_thread(client.close)


async def test_an_unreachable_dispatcher_is_dispatcher_unavailable() -> None:
    def call() -> None:
        with BlockingClient(f"http://127.0.0.1:{free_port()}/") as client:
            client.put("q", "pkg.mod:func")

    with pytest.raises(DispatcherUnavailable, match="cannot reach the dispatcher"):
        await asyncio.to_thread(call)


async def test_a_refused_connection_is_tried_on_the_next_dispatcher_at_once(
    aiohttp_server: Server,
) -> None:
    # Given two dispatchers, the first of which refuses connections (nothing listens)
    recorder = Recorder({"id": "j1", "queue": "q", "status": "pending"})
    server = await aiohttp_server(recorder.app())
    dead, alive = f"http://127.0.0.1:{free_port()}/", str(server.make_url("/"))

    def call() -> tuple[dict[str, Any], str]:
        with BlockingClient([dead, alive]) as client:
            put = client.put("q", "pkg.mod:func")
            return put, client.endpoint_url

    # When a put is made, it reaches the second one in the same call (nothing was sent to
    # the first, so sending it again cannot make a second job), once
    put, now = await asyncio.to_thread(call)
    assert put["id"] == "j1"
    assert now == alive
    assert [r["method"] for r in recorder.requests] == ["POST"]


async def test_a_call_without_an_answer_moves_on_but_is_not_sent_again(
    aiohttp_server: Server,
) -> None:
    # Given two dispatchers, the first of which takes the request and never answers
    release = threading.Event()
    arrived: list[str] = []

    async def stuck(request: web.Request) -> web.Response:
        arrived.append(request.method)
        await asyncio.to_thread(release.wait, 5)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stuck)
    first = await aiohttp_server(app)
    recorder = Recorder({"id": "j2", "queue": "q", "status": "pending"})
    second = await aiohttp_server(recorder.app())
    client = BlockingClient([str(first.make_url("/")), str(second.make_url("/"))], timeout=0.3)
    try:
        # When a put times out, it raises (it may have been done), and is not sent again
        with pytest.raises(DispatcherUnavailable):
            await asyncio.to_thread(client.put, "q", "pkg.mod:func")
        assert arrived == ["POST"] and recorder.requests == []
        # And the next call goes to the second dispatcher
        assert (await asyncio.to_thread(client.put, "q", "pkg.mod:func"))["id"] == "j2"
    finally:
        release.set()
        await asyncio.to_thread(client.close)


async def test_error_answers_are_the_typed_errors_of_the_asyncio_client(
    aiohttp_server: Server,
) -> None:
    recorder = Recorder({"error": "job_not_found", "message": "no job 'x'", "id": "x"}, 404)
    server = await aiohttp_server(recorder.app())

    def call() -> None:
        with BlockingClient(str(server.make_url("/"))) as client:
            client.get("q", "x")

    with pytest.raises(JobNotFound) as raised:
        await asyncio.to_thread(call)
    assert raised.value.details == {"status_code": 404, "id": "x"}


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/html; charset=utf-8", b"<h1>502 Bad Gateway</h1>", "502 Bad Gateway"),
        ("text/plain; charset=no-such-charset", b"upstream down \xff", "upstream down"),
        ("text/plain; charset=latin-1", "d\xe9j\xe0 vu".encode("latin-1"), "d\xe9j\xe0 vu"),
        ("", b"bare", "bare"),
    ],
)
async def test_a_non_json_error_answer_is_a_typed_error_with_its_text(
    aiohttp_server: Server, content_type: str, body: bytes, expected: str
) -> None:
    async def proxy_error(request: web.Request) -> web.Response:
        response = web.Response(status=502, body=body)
        if content_type:
            response.headers["Content-Type"] = content_type
        else:
            response.content_type = "application/octet-stream"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy_error)
    server = await aiohttp_server(app)

    def call() -> None:
        with BlockingClient(str(server.make_url("/"))) as client:
            client.stats("q")

    with pytest.raises(TqueuesError) as raised:
        await asyncio.to_thread(call)
    assert raised.value.details["status_code"] == 502
    assert expected in raised.value.message


async def test_a_closed_client_refuses_calls(aiohttp_server: Server) -> None:
    server = await aiohttp_server(Recorder({"status": "ok"}).app())

    def calls() -> None:
        client = BlockingClient(str(server.make_url("/")))
        client.health()
        client.close()
        client.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            client.health()
        with pytest.raises(RuntimeError, match="closed"):
            client.job_stream("q").connect()

    await asyncio.to_thread(calls)


CHILD = """
import json, os, sys
from tqueues.client import BlockingClient

client = BlockingClient(sys.argv[1])
client.health()
pid = os.fork()
if pid == 0:
    try:
        client.health()
    finally:
        os._exit(0)
os.waitpid(pid, 0)
client.health()
client.close()
"""


async def test_a_forked_child_opens_a_connection_of_its_own(aiohttp_server: Server) -> None:
    recorder = Recorder({"status": "ok"})
    server = await aiohttp_server(recorder.app())
    script = textwrap.dedent(CHILD)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(server.make_url("/")), stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    peers = [r["peer"] for r in recorder.requests]
    # The parent's calls share its connection; the child's came on another one
    assert len(peers) == 3 and peers[0] == peers[2] != peers[1], json.dumps(peers)


def test_the_worker_and_the_asyncio_client_do_not_load_libcurl() -> None:
    script = "import sys, tqueues, tqueues.worker; assert 'pycurl' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _sockets() -> int:
    """How many sockets this process has open."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:  # the listing's own descriptor, closed meanwhile
            pass
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts sockets in /proc")
async def test_a_thread_that_ended_leaves_no_connection_open(aiohttp_server: Server) -> None:
    recorder = Recorder({"status": "ok"})
    server = await aiohttp_server(recorder.app())
    client = BlockingClient(str(server.make_url("/")))
    before = _sockets()
    try:
        # Given a server that runs each request in a thread of its own, each calling once
        for _ in range(30):
            thread = threading.Thread(target=client.health)
            await asyncio.to_thread(lambda t=thread: (t.start(), t.join()))
        assert len({r["peer"] for r in recorder.requests}) == 30
        # Then the connections of the threads that ended are closed (both ends of each are
        # in this process: the client's and the test server's)
        deadline = time.monotonic() + 10
        while _sockets() > before + 2 and time.monotonic() < deadline:
            gc.collect()
            await asyncio.sleep(0.02)
        assert _sockets() <= before + 2
    finally:
        await asyncio.to_thread(client.close)


TLS_CALLS = """
import asyncio, sys
from tqueues import BlockingClient, Client
from tqueues.errors import DispatcherUnavailable

async def asyncio_call():
    async with Client(sys.argv[1]) as client:
        return await client.health()

outcomes = []
for call in (lambda: BlockingClient(sys.argv[1]).health(), lambda: asyncio.run(asyncio_call())):
    try:
        outcomes.append(call()["status"])
    except DispatcherUnavailable as exc:
        outcomes.append("certificate" if "certificate" in str(exc).lower() else str(exc))
print(" ".join(outcomes))
"""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="makes its certificate with openssl")
async def test_over_https_both_clients_trust_what_python_trusts(
    aiohttp_server: Server, tmp_path: Path
) -> None:
    # Given a dispatcher behind TLS with a certificate of its own
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await aiohttp_server(Recorder({"status": "ok"}).app(), ssl=context)
    url = str(server.make_url("/")).replace("http:", "https:")

    async def calls(cert_file: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        if cert_file:
            env["SSL_CERT_FILE"] = cert_file
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", TLS_CALLS, url, env=env, stdout=subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        return stdout.decode().strip()

    # When Python trusts it (SSL_CERT_FILE), both clients do; when not, neither does
    assert await calls(str(cert)) == "ok ok"
    assert await calls(None) == "certificate certificate"
