"""tqueues.Client and tqueues.BlockingClient against a real dispatcher process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import tqueues
from tests.acceptance.conftest import Cluster
from tqueues.errors import (
    Conflict,
    DispatcherUnavailable,
    Forbidden,
    InvalidTransition,
    JobNotFound,
    LeaseMismatch,
    NotFound,
    QueueNotFound,
    Unauthorized,
    Unavailable,
    ValidationError,
)

TOKEN, WORKER_TOKEN = "t" * 32, "w" * 32


async def test_every_operation_of_the_asyncio_client(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()
    async with tqueues.Client(dispatcher.url) as client:
        assert (await client.health())["status"] == "ok"
        created = await client.create_queue("q", ttr=30, max_attempts=2)
        assert (created["name"], created["ttr"]) == ("q", 30.0)
        assert (await client.create_queue("q", ttr=99))["ttr"] == 30.0
        assert [q["name"] for q in await client.list_queues()] == ["q"]
        assert (await client.update_queue("q", priority=5))["priority"] == 5
        assert (await client.queue_settings("q"))["stats"]["total"] == 0

        job = await client.put("q", "pkg.mod:func", [1], {"k": "v"}, ttr=10)
        assert (job["args"], job["kwargs"], job["ttr"], job["priority"]) == ([1], {"k": "v"}, 10, 5)
        batch = await client.put_many("q", [{"method": "a:b", "args": [i]} for i in range(3)])
        assert [j["args"] for j in batch] == [[0], [1], [2]]
        assert (await client.peek("q"))["id"] == job["id"]
        assert await client.peek("q", "buried") is None

        taken = await client.take("q", worker="me")
        assert taken is not None and taken["id"] == job["id"] and taken["lease"]
        lease = taken["lease"]
        updated = await client.update("q", job["id"], {"progress": 1}, lease=lease)
        assert updated["progress"] == 1
        touched = await client.touch("q", job["id"], lease=lease, ttr=100)
        assert touched["lease_expires"] > taken["lease_expires"]
        done = await client.finish("q", job["id"], lease=lease, result={"ok": True})
        assert done["status"] == "finished"
        assert (await client.get("q", job["id"]))["result"] == {"ok": True}

        first, second = await client.take_many("q", 2, wait=1)
        assert (await client.release("q", first["id"], lease=first["lease"]))["status"] == "pending"
        requeued = await client.requeue("q", second["id"], lease=second["lease"])
        assert requeued["status"] == "pending"
        again = await client.take("q")
        assert again is not None and again["id"] == first["id"]
        failed = await client.fail(
            "q", first["id"], lease=again["lease"], error="E", permanent=True
        )
        assert failed["status"] == "failed"

        third = await client.take("q")
        assert third is not None
        buried = await client.bury("q", third["id"], lease=third["lease"], reason="later")
        assert buried["status"] == "buried"
        assert (await client.peek("q", "buried"))["id"] == third["id"]
        assert (await client.kick_job("q", third["id"]))["status"] == "pending"
        fourth = await client.take("q")
        assert fourth is not None
        await client.bury("q", fourth["id"])
        assert await client.kick("q", 10) == 1

        page = await client.list_jobs("q", limit=2)
        ids = [j["id"] for j in page["jobs"]]
        while page["next_cursor"]:
            page = await client.list_jobs("q", limit=2, cursor=page["next_cursor"])
            ids += [j["id"] for j in page["jobs"]]
        assert len(ids) == 4
        pending = await client.list_jobs("q", status="pending")
        assert len(pending["jobs"]) == 2

        stats = await client.stats("q")
        assert stats["total"] == 4 and stats["counters"]["put"] == 4
        deleted = await client.delete("q", ids[-1])
        assert deleted["id"] == ids[-1]
        assert await client.truncate("q") == 3
        assert await client.take("q") is None
        assert await client.take_many("q", 5, wait=0.2) == []
        assert await client.drop_queue("q") == 0
        assert await client.list_queues() == []


async def test_typed_errors(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()
    async with tqueues.Client(dispatcher.url) as client:
        with pytest.raises(QueueNotFound) as missing:
            await client.put("nope", "a:b")
        assert isinstance(missing.value, NotFound) and missing.value.details["status_code"] == 404
        with pytest.raises(QueueNotFound):
            await client.peek("nope")
        await client.create_queue("q")
        with pytest.raises(JobNotFound):
            await client.get("q", "0" * 32)
        with pytest.raises(ValidationError) as invalid:
            await client.put("q", "a:b", priority=-1)
        assert invalid.value.details["field"] == "priority"
        job = await client.put("q", "a:b")
        taken = await client.take("q")
        assert taken is not None
        with pytest.raises(LeaseMismatch) as stale:
            await client.finish("q", job["id"], lease="stale")
        assert isinstance(stale.value, Conflict)
        await client.finish("q", job["id"], lease=taken["lease"])
        with pytest.raises(InvalidTransition):
            await client.finish("q", job["id"])

    dispatcher.proc.stop()
    async with tqueues.Client(dispatcher.url, timeout=2) as gone:
        with pytest.raises(DispatcherUnavailable) as unavailable:
            await gone.stats("q")
        assert isinstance(unavailable.value, Unavailable)


async def test_tokens(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN, "--worker_token", WORKER_TOKEN)
    async with tqueues.Client(dispatcher.url) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.list_queues()
    async with tqueues.Client(dispatcher.url, token=TOKEN) as admin:
        await admin.create_queue("q")
        assert (await admin.put("q", "a:b"))["status"] == "pending"
    async with tqueues.Client(dispatcher.url, token=WORKER_TOKEN) as worker:
        taken = await worker.take("q")
        assert taken is not None
        await worker.finish("q", taken["id"], lease=taken["lease"])
        with pytest.raises(Forbidden):
            await worker.drop_queue("q")


async def test_the_blocking_client(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()

    def script() -> list[str]:
        with tqueues.BlockingClient(dispatcher.url) as client:
            client.create_queue("b")
            job = client.put("b", "pkg.mod:func", [1])
            client.put_many("b", [{"method": "a:b"}])
            taken = client.take("b", wait=1)
            assert taken is not None and taken["id"] == job["id"]
            client.finish("b", job["id"], lease=taken["lease"], result=7)
            assert client.get("b", job["id"])["result"] == 7
            with pytest.raises(JobNotFound):
                client.get("b", "missing")
            results = []

            def other_thread() -> None:  # one client, shared between threads
                results.append(client.stats("b")["total"])

            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
            assert results == [2]
            events = sorted(client.stats("b")["counters"])
        assert client._closed
        with pytest.raises(RuntimeError):
            client.stats("b")
        client.close()  # idempotent
        return events

    events = await asyncio.to_thread(script)
    assert {"put", "taken", "finished"} <= set(events)


async def test_every_operation_of_the_blocking_client(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()

    def script() -> None:
        with tqueues.BlockingClient(dispatcher.url) as client:
            assert client.health()["status"] == "ok"
            assert client.create_queue("q", ttr=30, max_attempts=1)["ttr"] == 30.0
            assert client.update_queue("q", priority=5)["priority"] == 5
            assert client.queue_settings("q")["stats"]["total"] == 0
            assert [q["name"] for q in client.list_queues()] == ["q"]

            job = client.put("q", "pkg.mod:func", [1], {"k": "v"}, ttr=10)
            batch = client.put_many("q", [{"method": "a:b", "args": [i]} for i in range(4)])
            assert client.peek("q")["id"] == job["id"]
            assert client.peek("q", "buried") is None
            page = client.list_jobs("q", status="pending", limit=2)
            assert [j["id"] for j in page["jobs"]] == [job["id"], batch[0]["id"]]
            assert page["next_cursor"]

            (taken,) = client.take_any(["q"], 1, wait=1)
            lease = taken["lease"]
            assert client.update("q", job["id"], {"progress": 1}, lease=lease)["progress"] == 1
            assert client.touch("q", job["id"], lease=lease, ttr=60)["ttr"] == 10
            with pytest.raises(LeaseMismatch):
                client.finish("q", job["id"], lease="stale")
            failed = client.fail("q", job["id"], lease=lease, error="boom", permanent=True)
            assert failed["status"] == "failed"

            second = client.take("q", worker="me")
            assert second is not None and second["id"] == batch[0]["id"]
            assert client.bury("q", second["id"], lease=second["lease"])["status"] == "buried"
            assert client.kick_job("q", second["id"])["status"] == "pending"
            third, fourth = client.take_many("q", 2)
            results = client.report(
                "q",
                [
                    {"id": third["id"], "lease": third["lease"], "action": "finish"},
                    {"id": fourth["id"], "lease": "stale", "action": "finish"},
                ],
            )
            assert results[0]["status"] == "finished"
            assert isinstance(results[1], LeaseMismatch)
            released = client.release("q", fourth["id"], lease=fourth["lease"], delay=30)
            assert released["status"] == "delayed"
            assert client.kick("q", 5) == 1
            assert client.delete("q", job["id"])["id"] == job["id"]
            with pytest.raises(JobNotFound):
                client.get("q", job["id"])
            assert client.stats("q")["counters"]["finished"] == 1
            assert client.dispatcher_stats()["total"] == client.stats("q")["total"]
            assert client.truncate("q") == 4
            assert client.drop_queue("q") == 0
            with pytest.raises(QueueNotFound):
                client.put("q", "pkg.mod:func")

    await asyncio.to_thread(script)


async def test_failed_jobs_are_kicked_back_by_both_clients(
    cluster: Cluster, store_args: list[str]
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    async with tqueues.Client(dispatcher.url) as client:
        # Given four jobs that failed for good, and a buried one
        await client.create_queue("q", max_attempts=3)
        jobs = await client.put_many("q", [{"method": "a:b", "args": [i]} for i in range(5)])
        taken = await client.take_many("q", 5)
        for job in taken[:4]:
            failed = await client.fail(
                "q", job["id"], lease=job["lease"], error="E", permanent=True
            )
            assert failed["status"] == "failed"
        await client.bury("q", taken[4]["id"], lease=taken[4]["lease"])
        # When the queue is kicked as beanstalkd would: the buried job, not the failed ones
        assert await client.kick("q", 10) == 1
        assert await client.kick("q", 10) == 0
        # When one failed job is kicked by id: pending, its attempts renewed
        kicked = await client.kick_job("q", jobs[0]["id"])
        assert (kicked["status"], kicked["attempts"], kicked["finished_at"]) == ("pending", 0, None)
        with pytest.raises(InvalidTransition):
            await client.kick_job("q", jobs[0]["id"])  # pending now
        # When failed jobs are kicked by status, up to the bound
        assert await client.kick("q", 2, status="failed") == 2
        with pytest.raises(ValidationError) as refused:
            await client.kick("q", 1, status="pending")
        assert refused.value.details["field"] == "status"

    def blocking() -> tuple[int, dict[str, int]]:
        with tqueues.BlockingClient(dispatcher.url) as same:
            return same.kick("q", 10, status="failed"), same.stats("q")["jobs"]

    # And the blocking client kicks the last one: every job is pending again
    kicked_last, counts = await asyncio.to_thread(blocking)
    assert (kicked_last, counts["pending"], counts["failed"]) == (1, 5, 0)


#: Job ids that would walk to another path if a client put them in a URL as they are.
TRAVERSALS = ["../../q", "..", ".", "x/finish", "a?b=c#d", "%2E%2E"]


async def test_a_job_id_never_reaches_another_path(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()
    async with tqueues.Client(dispatcher.url) as client:
        await client.create_queue("q")
        job = await client.put("q", "pkg.mod:func")
        for job_id in TRAVERSALS:
            # Given an id from untrusted input, when a client acts on it
            for call in (client.delete, client.get, client.kick_job):
                # Then it is only ever an id that matches no job
                with pytest.raises(JobNotFound) as raised:
                    await call("q", job_id)
                assert raised.value.details["id"] == job_id

    def blocking() -> None:
        with tqueues.BlockingClient(dispatcher.url) as client:
            for job_id in TRAVERSALS:
                with pytest.raises(JobNotFound):
                    client.delete("q", job_id)

    await asyncio.to_thread(blocking)
    async with tqueues.Client(dispatcher.url) as client:
        # and the queue and its job are still there
        assert (await client.get("q", job["id"]))["status"] == "pending"


async def test_jobs_acknowledged_on_the_job_stream_survive_kill_9(cluster: Cluster) -> None:
    from tests.acceptance.test_reliability import free_port

    listen = ("--listen", f"127.0.0.1:{free_port()}")
    data = cluster.tmp_path / "stream-data"
    dispatcher = await cluster.dispatcher(data, *listen)
    acked: list[str] = []
    async with tqueues.Client(dispatcher.url) as client:
        await client.create_queue("s")
        async with client.job_stream("s") as stream:
            # One producer, one call at a time, as fast as the answers come; a second task
            # on the same stream meanwhile
            async def produce(first: int) -> None:
                for i in range(first, first + 1000):
                    acked.append((await stream.put("pkg.mod:func", [i]))["id"])

            producers = [asyncio.create_task(produce(0)), asyncio.create_task(produce(10_000))]
            try:
                deadline = asyncio.get_running_loop().time() + 30
                while len(acked) < 300 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.005)
                # When the dispatcher dies with SIGKILL mid-stream
                dispatcher.proc.kill()
                done = await asyncio.gather(*producers, return_exceptions=True)
            finally:
                for task in producers:
                    task.cancel()
            assert all(isinstance(outcome, DispatcherUnavailable) for outcome in done), done
            assert 300 <= len(acked) < 2000, "the kill did not land mid-way"
            assert not stream.connected
            # Then every acknowledged job is there after a restart on the same data, and the
            # stream opens again on its next call
            restarted = await cluster.dispatcher(data, *listen)
            assert restarted.url == dispatcher.url
            after = await stream.put("pkg.mod:func", ["after"])
        listed: list[str] = []
        cursor = None
        while True:
            page = await client.list_jobs("s", cursor=cursor, limit=1000)
            listed += [job["id"] for job in page["jobs"]]
            if (cursor := page["next_cursor"]) is None:
                break
    assert set(acked) <= set(listed)
    assert listed[-1] == after["id"]


async def test_the_blocking_job_stream(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()

    def script() -> tuple[list[Any], list[Any]]:
        with tqueues.BlockingClient(dispatcher.url) as client:
            client.create_queue("b")
            with client.job_stream("b") as stream:
                assert stream.connected
                one = stream.put("pkg.mod:func", [1], priority=3)
                many = stream.put_many([{"method": "a:b", "args": [2]}])
                with pytest.raises(ValidationError):
                    stream.put("pkg.mod:func", ttr="soon")
            assert not stream.connected
            listed = client.list_jobs("b")["jobs"]
            return [one["id"], *(job["id"] for job in many)], [job["id"] for job in listed]

    put, listed = await asyncio.to_thread(script)
    assert put == listed
