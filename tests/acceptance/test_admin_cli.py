"""The ``tqueues`` admin command line, run through its console script against a real dispatcher."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tqueues
from tests.acceptance.conftest import ROOT, Cluster, child_env, wait_for
from tqueues.cli import admin

ADMIN = str(Path(sys.executable).parent / "tqueues")
TOKEN = "s" * 32


async def tq(
    *argv: str, url: str | None = None, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tqueues ARGV`` (with --url unless ``url`` is None) without blocking the loop."""
    full = [ADMIN, *argv, *(["--url", url] if url else [])]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            full,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env={**child_env(), **(env or {})},
        )

    return await asyncio.to_thread(run)


def lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_help_and_version() -> None:
    done = await tq("--help")
    assert done.returncode == 0 and done.stdout.strip() == (admin.__doc__ or "").strip()
    assert "Usage:\n  tqueues put " in done.stdout
    assert (await tq("--version")).stdout.strip() == tqueues.__version__
    wrong = await tq("explode")
    assert wrong.returncode == 2 and "Usage:" in wrong.stderr


async def test_take_from_several_queues(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    async with tqueues.Client(d.url) as client:
        for name in ("urgent", "normal"):
            await client.create_queue(name)
        await client.put_many("normal", [{"method": "a:b", "args": [i]} for i in range(3)])
    # The first queue named that has jobs gives them (like beanstalkd's reserve on the
    # tubes it watches); all queues empty: exit status 1
    taken = lines(await tq("take", "urgent", "normal", "--count", "2", url=d.url))
    assert [(j["queue"], j["args"]) for j in taken] == [("normal", [0]), ("normal", [1])]
    assert all(j["lease"] for j in taken)
    lines(await tq("take", "urgent", "normal", url=d.url))
    empty = await tq("take", "urgent", "normal", "--wait", "0.2", url=d.url)
    assert (empty.returncode, empty.stdout) == (1, "")
    missing = await tq("take", "urgent", "nope", url=d.url)
    assert missing.returncode == 2 and "nope" in missing.stderr


async def test_put_take_consume_peek(cluster: Cluster, tmp_path: Path) -> None:
    d = await cluster.dispatcher()
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
    url = d.url

    from_arg = lines(await tq("put", "q", '{"method": "a:b", "args": [1]}', url=url))
    assert [j["args"] for j in from_arg] == [[1]]
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"method": "a:b", "args": [2], "priority": 5}))
    from_file = lines(await tq("put", "q", "--file", str(job_file), url=url))
    assert from_file[0]["priority"] == 5
    batch = json.dumps([{"method": "a:b", "args": [3]}, {"method": "a:b", "args": [4]}])
    from_stdin = lines(await tq("put", "q", url=url, stdin=batch))
    assert [j["args"] for j in from_stdin] == [[3], [4]]
    explicit = lines(await tq("put", "q", "--file", "-", url=url, stdin='{"method": "c:d"}'))
    assert explicit[0]["method"] == "c:d"

    peeked = lines(await tq("peek", "q", url=url))
    assert peeked[0]["id"] == from_file[0]["id"]  # priority 5 comes first
    by_id = lines(await tq("peek", "q", from_arg[0]["id"], url=url))
    assert by_id[0]["args"] == [1]

    taken = lines(await tq("take", "q", url=url))
    assert taken[0]["id"] == from_file[0]["id"] and taken[0]["lease"]
    assert taken[0]["status"] == "started"
    consumed = lines(await tq("consume", "q", url=url))
    assert consumed[0]["status"] == "finished" and consumed[0]["args"] == [1]
    two = lines(await tq("take", "q", "--count", "5", url=url))
    assert [j["args"] for j in two] == [[3], [4], []]

    empty = await tq("take", "q", url=url)
    assert (empty.returncode, empty.stdout) == (1, "")
    assert "queue empty" in empty.stderr
    started = time.monotonic()
    waited = await tq("consume", "q", "--wait", "0.5", url=url)
    assert waited.returncode == 1 and time.monotonic() - started >= 0.5
    none_buried = await tq("peek", "q", "--status", "buried", url=url)
    assert none_buried.returncode == 1


async def test_wait_wakes_on_a_put(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
        waiting = asyncio.create_task(tq("consume", "q", "--wait", "20", url=d.url))
        await asyncio.sleep(0.5)
        job = await client.put("q", "a:b")
        done = await asyncio.wait_for(waiting, 20)
        assert lines(done)[0]["id"] == job["id"]


async def test_wait_reads_negative_as_no_wait_as_tpq(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
    # tpq's --wait=-1 (do not wait) means the same here, as does 0 (tqueues' wait=0)
    for wait in ("-1", "-0.5", "0"):
        started = time.monotonic()
        empty = await tq("consume", "q", "--wait", wait, url=d.url)
        assert (empty.returncode, empty.stdout) == (1, ""), empty.stderr
        assert "queue empty" in empty.stderr and time.monotonic() - started < 10


async def take_timeouts(client: tqueues.Client, queue: str) -> int:
    """How many long-polls of ``queue`` the dispatcher answered empty once their time was up."""
    return int((await client.stats(queue))["counters"].get("take_timeout", 0))


async def test_wait_longer_than_the_dispatcher_allows_polls_again(cluster: Cluster) -> None:
    # Given a dispatcher that caps a long-poll at 1 s
    d = await cluster.dispatcher(None, "--max_wait", "1")
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
        # When the command waits 3 s on an empty queue, it waits them all (several
        # long-polls in a row), then says the queue is empty
        started = time.monotonic()
        empty = await tq("consume", "q", "--wait", "3", url=d.url)
        assert (empty.returncode, empty.stdout) == (1, ""), empty.stderr
        assert time.monotonic() - started >= 3
        assert await take_timeouts(client, "q") >= 3


async def test_wait_forever_waits_until_a_job_comes(cluster: Cluster) -> None:
    # Given a dispatcher that caps a long-poll at 1 s, and a consumer that waits forever
    # (tpq's --wait=0)
    d = await cluster.dispatcher(None, "--max_wait", "1")
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
        waiting = asyncio.create_task(tq("consume", "q", "--wait", "forever", url=d.url))

        async def polled_past_the_cap() -> bool:
            if waiting.done():  # it gave up (or failed): the check below says how
                return True
            return await take_timeouts(client, "q") >= 2

        # When two long-polls have run out with no job, and then a job is put
        await wait_for(polled_past_the_cap, timeout=20, what="two long-polls to run out")
        assert not waiting.done(), waiting.result()
        job = await client.put("q", "a:b")
        # Then the consumer gets it
        done = await asyncio.wait_for(waiting, 20)
        assert lines(done)[0]["id"] == job["id"]


async def test_bury_kick_delete_truncate(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    url = d.url
    async with tqueues.Client(url) as client:
        await client.create_queue("q")
        jobs = await client.put_many("q", [{"method": "a:b"} for _ in range(4)])
    ids = [j["id"] for j in jobs]

    buried = lines(await tq("bury", "q", ids[0], "--reason", "poison", url=url))
    assert buried[0]["status"] == "buried"
    await tq("bury", "q", ids[1], url=url)
    kicked_one = lines(await tq("kick", "q", "--id", ids[0], url=url))
    assert kicked_one[0]["status"] == "pending"
    kick = await tq("kick", "q", "10", url=url)
    assert kick.returncode == 0 and kick.stdout.strip() == "kicked 1 job(s) in q"
    assert (await tq("kick", "q", url=url)).stdout.strip() == "kicked 0 job(s) in q"

    deleted = lines(await tq("delete", "q", ids[2], url=url))
    assert deleted[0]["id"] == ids[2]
    missing = await tq("delete", "q", ids[2], url=url)
    assert missing.returncode == 2 and "job_not_found" in missing.stderr

    truncated = await tq("truncate", "q", url=url)
    assert truncated.stdout.strip() == "deleted 3 job(s) from q"


async def test_kick_failed_jobs(cluster: Cluster, store_args: list[str]) -> None:
    d = await cluster.dispatcher(None, *store_args)
    url = d.url
    # Given four jobs that failed for good
    async with tqueues.Client(url) as client:
        await client.create_queue("q")
        jobs = await client.put_many("q", [{"method": "a:b"} for _ in range(4)])
        for job in await client.take_many("q", 4):
            await client.fail("q", job["id"], lease=job["lease"], error="E", permanent=True)
    # A plain kick leaves them (it kicks buried, else delayed jobs, as beanstalkd)
    assert (await tq("kick", "q", "10", url=url)).stdout.strip() == "kicked 0 job(s) in q"
    # One failed job by id: pending again, attempts renewed
    (one,) = lines(await tq("kick", "q", "--id", jobs[0]["id"], url=url))
    assert (one["status"], one["attempts"]) == ("pending", 0)
    # Up to N of them, then all there are
    some = await tq("kick", "q", "2", "--status", "failed", url=url)
    assert some.returncode == 0 and some.stdout.strip() == "kicked 2 failed job(s) in q"
    every = await tq("kick", "q", "--all", "--status", "failed", url=url)
    assert every.returncode == 0 and every.stdout.strip() == "kicked 1 failed job(s) in q"
    async with tqueues.Client(url) as client:
        counts = (await client.stats("q"))["jobs"]
    assert (counts["pending"], counts["failed"]) == (4, 0)
    # --all names what it kicks; a status no job is kicked from is refused
    for argv, message in (
        (["--all"], "--all needs --status"),
        (["--status", "pending"], "kick --status must be buried, failed or delayed"),
        (["--id", jobs[0]["id"]], "invalid_transition"),
    ):
        refused = await tq("kick", "q", *argv, url=url)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


async def test_stats_and_queues(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    url = d.url
    async with tqueues.Client(url) as client:
        await client.create_queue("alpha", ttr=12)
        await client.create_queue("beta")
        await client.put_many("alpha", [{"method": "a:b"}] * 3)
        await client.take("alpha")

    table = await tq("stats", url=url)
    assert table.returncode == 0, table.stderr
    header, alpha, beta = table.stdout.splitlines()[:3]
    assert header.split() == ["queue", *admin.STATUSES, "total", "paused"]
    assert alpha.split() == ["alpha", "2", "0", "0", "1", "0", "0", "0", "0", "3", "no"]
    assert beta.split()[0] == "beta" and beta.split()[-2:] == ["0", "no"]
    assert "since start" in table.stdout

    one = json.loads((await tq("stats", "alpha", "--json", url=url)).stdout)
    assert one["jobs"]["pending"] == 2 and one["counters"]["put"] == 3
    every = json.loads((await tq("stats", "--json", url=url)).stdout)
    assert [s["queue"] for s in every] == ["alpha", "beta"]

    queues = await tq("queues", url=url)
    assert queues.stdout.splitlines()[0].split()[:3] == ["name", "ttr", "max_attempts"]
    assert queues.stdout.splitlines()[1].split()[:2] == ["alpha", "12.0"]
    listed = json.loads((await tq("queues", "--json", url=url)).stdout)
    assert [q["name"] for q in listed] == ["alpha", "beta"]


async def test_url_and_token_from_the_environment(cluster: Cluster) -> None:
    d = await cluster.dispatcher(None, "--token", TOKEN)
    env = {"TQUEUES_URL": d.url, "TQUEUES_TOKEN": TOKEN}
    done = await tq("queues", "--json", env=env)
    assert done.returncode == 0 and json.loads(done.stdout) == []
    refused = await tq("queues", env={"TQUEUES_URL": d.url})
    assert refused.returncode == 2 and "unauthorized" in refused.stderr
    with_option = await tq("queues", "--json", "--token", TOKEN, url=d.url)
    assert with_option.returncode == 0


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [(["put", "q", "{nope"], None, "not valid JSON"), (["put", "q", "[1]"], None, "JSON object"),
     (["put", "q", '{"method": "a:b", "colour": 1}'], None, "colour"),
     (["put", "q", "--file", "/nonexistent"], None, "cannot read"),
     (["put", "nope", '{"method": "a:b"}'], None, "queue_not_found"),
     (["take", "q", "--wait", "soon"], None, "--wait"), (["take", "q", "--wait", "nan"], None,
     "--wait"), (["stats", "nope"], None, "nope")],
)  # fmt: skip
async def test_errors_exit_2_with_a_message(
    cluster: Cluster, argv: list[str], stdin: str | None, message: str
) -> None:
    d = await cluster.dispatcher()
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
    done = await tq(*argv, url=d.url, stdin=stdin)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (one the system just gave and took back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be one line a person reads: no repr, no traceback."""
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    for python in ("Traceback", "Error(", "ConnectionKey", "<", "dispatcher_unavailable"):
        assert python not in done.stderr, done.stderr
    return done.stderr.strip()


async def test_an_unreachable_dispatcher_is_one_line_that_says_what_failed() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    # Nothing listens: the URL, what failed, and that nothing was sent
    for argv in (["stats"], ["put", "q", '{"method": "a:b"}'], ["consume", "q", "--wait", "5"]):
        message = one_line(await tq(*argv, url=url))
        assert message.startswith(f"tqueues: cannot reach the dispatcher at {url}: "), message
        assert "connection refused; gave up, nothing was sent" in message
        assert "--url" in message and "TQUEUES_URL" in message
    # A host name that does not resolve
    message = one_line(await tq("stats", url="http://tqueues-nowhere.invalid:8080/"))
    assert "cannot resolve host name 'tqueues-nowhere.invalid'" in message
    # A URL that is not HTTP is refused before anything is sent
    done = await tq("stats", url="ftp://127.0.0.1/")
    assert done.returncode == 2 and "--url must be an http:// or https:// URL" in done.stderr


async def test_a_dispatcher_that_does_not_answer_is_one_line_that_says_so() -> None:
    # Given a server that takes the request and never answers
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        message = one_line(await tq("put", "q", '{"method": "a:b"}', "--timeout", "1", url=url))
    # Then the message says how long it waited, and that the put may have been done
    assert message.startswith(f"tqueues: cannot reach the dispatcher at {url}: no answer within")
    assert "gave up; it may have been done" in message
