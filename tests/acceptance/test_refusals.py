"""What a real ``tqueues_dispatcher`` refuses, clearly (issue #21): JSON it would not store
as sent (a key given twice, integers past 2**53, on both stores), requests for another
site's host name when it has no token (DNS rebinding), an empty token file, options that
do not exist; and ``--max_body``, which the documentation named and it lacked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.acceptance.conftest import (
    DISPATCHER,
    ROOT,
    WORKER,
    Api,
    Cluster,
    DispatcherProc,
    child_env,
)

TOKEN = "refusals-" + "Qx4" * 9
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def port_of(dispatcher: DispatcherProc) -> int:
    port = urlsplit(dispatcher.url).port
    assert port is not None
    return port


# -- JSON the stores would not keep as sent ----------------------------------------------


async def raw_call(
    session: aiohttp.ClientSession, method: str, url: str, body: bytes
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    async with session.request(method, url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_a_key_given_twice_is_refused_on_every_body(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a dispatcher with a queue and a started job
    dispatcher = await cluster.dispatcher()
    url = dispatcher.url
    api = Api(session, url)
    await api.create_queue("dup")
    put = await api.put("dup", "coro_add", 1, 2)
    status, taken = await api.take("dup")
    assert status == 200
    job, lease = taken["id"], taken["lease"]
    # When bodies give a key twice, the last one being the dangerous one
    cases = [
        ("POST", url, b'{"queue":"dup","method":"m:f","method":"os:system"}', "method"),
        ("POST", url + "queues/dup/jobs", b'{"method":"m:f", "method" :"os:system"}', "method"),
        ("POST", url + "queues/dup/jobs", b'{"jobs":[{"method":"m:f","method":"x:y"}]}', "jobs"),
        ("PATCH", f"{url}?queue=dup&id={job}&lease={lease}", b'{"p":1,"p":2}', "p"),
        ("DELETE", f"{url}?queue=dup&id={job}&lease={lease}", b'{"result":1,"result":2}', "result"),
        (
            "POST",
            url + "queues/dup/outcomes",
            b'{"outcomes":[{"id":"%s","lease":"%s","action":"finish","action":"fail"}]}'
            % (job.encode(), lease.encode()),
            "outcomes",
        ),
        ("PUT", url + "queues/other", b'{"ttr":5,"ttr":6}', "ttr"),
    ]
    for method, target, body, field in cases:
        status, answer = await raw_call(session, method, target, body)
        # Then each is a 400 naming the key, and nothing is stored
        assert status == 400, (target, answer)
        assert answer["field"] == field and "more than once" in answer["message"], answer
    assert (await api.get("dup", job))["status"] == "started"
    assert (await api.get("dup", put["id"])).get("p") is None
    stats = await (await session.get(url + "queues/dup/stats")).json()
    assert stats["total"] == 1
    assert (await session.get(url + "queues/other")).status == 404


async def test_integers_beyond_2_53_are_refused_on_both_stores(
    cluster: Cluster, session: aiohttp.ClientSession, store_args: list[str]
) -> None:
    # Given a dispatcher on each store, with a started job
    dispatcher = await cluster.dispatcher(None, *store_args)
    url = dispatcher.url
    api = Api(session, url)
    await api.create_queue("ints")
    edge = 2**53 - 1
    # When a job's arguments are the largest integers every store keeps exactly
    put = await api.put("ints", "coro_add", edge, -edge, kwargs={"n": [edge]})
    # Then they come back exactly
    stored = await api.get("ints", put["id"])
    assert (stored["args"], stored["kwargs"]) == ([edge, -edge], {"n": [edge]})
    status, taken = await api.take("ints")
    assert status == 200
    job, lease = taken["id"], taken["lease"]
    # And one past them is refused wherever it is, naming the field, nothing stored
    cases = [
        ("POST", url, {"queue": "ints", "method": "m:f", "args": [2**53]}, "args"),
        ("POST", url + "queues/ints/jobs", {"method": "m:f", "kwargs": {"n": -(2**53)}}, "kwargs"),
        ("POST", url + "queues/ints/jobs", {"method": "m:f", "args": [2**64]}, "args"),
        ("PATCH", f"{url}?queue=ints&id={job}&lease={lease}", {"progress": 2**60}, "progress"),
        ("DELETE", f"{url}?queue=ints&id={job}&lease={lease}", {"result": [1, 2**63]}, "result"),
        (
            "POST",
            url + f"queues/ints/jobs/{job}/finish?lease={lease}",
            {"result": {"big": 10**20}},
            "result",
        ),
    ]
    for method, target, body, field in cases:
        raw = json.dumps(body).encode()  # Python's ints as exact JSON literals
        status, answer = await raw_call(session, method, target, raw)
        assert status == 400, (target, answer)
        assert answer["field"] == field and "2**53-1" in answer["message"], answer
    after = await api.get("ints", job)
    assert after["status"] == "started" and "progress" not in after
    stats = await (await session.get(url + "queues/ints/stats")).json()
    assert stats["total"] == 1


# -- DNS rebinding ---------------------------------------------------------------------------


async def test_without_a_token_only_loopback_host_names_are_answered(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a dispatcher on loopback without a token
    dispatcher = await cluster.dispatcher()
    port = port_of(dispatcher)
    health = dispatcher.url + "health"
    # When a page whose name was rebound to 127.0.0.1 makes a request, its Host is its own
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "0x7f.1"):
        async with session.get(health, headers={"Host": host}) as response:
            # Then it is refused, saying why
            assert response.status == 421, host
            answer = await response.json()
            assert answer["error"] == "host_not_allowed" and "--token" in answer["message"]
    # And the loopback's own names are answered, with any port
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.9.8.7:{port}",
                 f"[::1]:{port}", "LOCALHOST.", "api.localhost:1"):  # fmt: skip
        async with session.get(health, headers={"Host": host}) as response:
            assert response.status == 200, host


async def test_with_a_token_any_host_name_is_answered(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        headers = {"Host": "tqueues.internal.example"}
        async with session.get(dispatcher.url + "health", headers=headers) as response:
            assert response.status == 200


# -- the command line ---------------------------------------------------------------------


def run(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=child_env()
    )


def test_an_empty_token_file_is_refused_at_start(tmp_path: Path) -> None:
    # Given a token file that is empty (a failed secret mount, say)
    empty = tmp_path / "token"
    empty.write_text("\n")
    # When the dispatcher is started with it
    argv = [DISPATCHER, "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data")]
    with subprocess.Popen(
        [*argv, "--token_file", str(empty)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=child_env(),
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the dispatcher started without auth on an empty --token_file")
    status = proc.returncode
    # Then it refuses to start, in one line naming the file
    assert status == 2
    assert (
        stderr.strip()
        == f"tqueues_dispatcher: --token_file: {empty} is empty; it must hold the token"
    )


async def test_an_unknown_option_gets_one_clean_line(tmp_path: Path) -> None:
    done = run(DISPATCHER, "--max_bdy", "5")
    assert done.returncode == 1
    first, *rest = done.stderr.strip().splitlines()
    assert (
        first
        == "tqueues_dispatcher: unknown option --max_bdy; did you mean --max_body? (see --help)"
    )
    assert rest[0] == "Usage:" and "Option(" not in done.stderr and "Traceback" not in done.stderr


async def test_an_unknown_worker_option_gets_one_clean_line() -> None:
    done = run(WORKER, "--queue", "q", "--allow", "x", "--allow_ay")
    assert done.returncode == 1
    first, *rest = done.stderr.strip().splitlines()
    assert (
        first == "tqueues_worker: unknown option --allow_ay; did you mean --allow_any? (see --help)"
    )
    assert rest[0] == "Usage:" and "Option(" not in done.stderr and "Traceback" not in done.stderr


async def test_an_unknown_admin_option_gets_one_clean_line() -> None:
    admin = str(Path(DISPATCHER).parent / "tqueues")
    done = run(admin, "stats", "--bogus")
    assert done.returncode == 2
    first, *rest = done.stderr.strip().splitlines()
    assert first == "tqueues: unknown option --bogus (see --help)"
    assert rest[0] == "Usage:" and "Option(" not in done.stderr and "Traceback" not in done.stderr
    # and a command whose arguments do not match says so, not that they are unexpected
    done = run(admin, "kick")
    assert done.returncode == 2
    assert done.stderr.startswith("tqueues: the arguments do not match the usage (see --help)")


async def test_max_body_is_an_option(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    dispatcher = await cluster.dispatcher(None, "--max_body", "2048")
    api = Api(session, dispatcher.url)
    await api.create_queue("small")
    job = {"queue": "small", "method": "m:f", "args": ["x" * 3000]}
    status, body = await api.call("POST", None, job)
    assert status == 413 and "2048 bytes" in body["message"]
    job["args"] = ["x" * 1000]
    assert (await api.call("POST", None, job))[0] == 200
