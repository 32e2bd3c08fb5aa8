"""The producer side of each system, run in that system's own virtualenv.

``python -m benchmarks.peers.produce SYSTEM ACTION [options]`` prints one JSON object:

=================  ==========================================================
``enqueue``        W1: ``--jobs`` jobs, one call each; ``{"seconds": ...}``
``enqueue_async``  the same with tqueues' asyncio client (its ``enqueue`` uses the
                   blocking one, as a synchronous program would)
``bulk``           W1 bulk: the same jobs in the system's bulk call (where it has one)
``stream``         W1 stream: the same jobs one call at a time on the system's producer
                   stream (tqueues' job stream: one WebSocket, each job acknowledged
                   once durable), where it has one
``fill``           W2 set-up: ``--jobs`` jobs queued as fast as the system allows
``latency``        W3: one job at a time, ``--jobs`` times after a warm-up, each start
                   reported by the job on UDP ``--udp``; ``{"ms": [...]}``; with
                   ``--stream``, each job put on the producer stream (where there is one)
``reset``          empty the system's store (procrastinate: a fresh schema)
``versions``       the installed versions of the system's packages
=================  ==========================================================

``--url`` is where the system's server (or tqueues' dispatcher) listens. Only the
standard library is imported here at module level; each system's package is imported by
its own class.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from importlib import metadata
from typing import Any

QUEUE = "bench"
CHUNK = 1000  # jobs per bulk call


class Producer:
    """One system's client. ``put`` enqueues one no-op job (sync or async)."""

    packages: tuple[str, ...] = ()
    has_bulk = False

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        """Connect (async clients)."""

    async def close(self) -> None:
        """Disconnect."""

    def put(self, x: int) -> Any:
        """Enqueue the no-op job with argument ``x``."""
        raise NotImplementedError

    def put_many(self, xs: list[int]) -> Any:
        """Enqueue several jobs in one bulk call."""
        raise NotImplementedError

    async def open_stream(self) -> Callable[[int], Awaitable[Any]] | None:
        """Open the system's producer stream: a function that enqueues the job of ``x`` on
        it as ``put`` does; None when the system has none. ``close`` closes it."""
        return None

    def reset(self) -> Any:
        """Empty the store (most systems get a fresh server per workload instead)."""


class RQ(Producer):
    packages = ("rq", "redis")
    has_bulk = True

    async def open(self) -> None:
        from redis import Redis
        from rq import Queue

        from benchmarks.peers.tasks_rq import noop

        self.noop = noop
        self.queue = Queue(QUEUE, connection=Redis.from_url(self.url))

    def put(self, x: int) -> None:
        self.queue.enqueue(self.noop, x)

    def put_many(self, xs: list[int]) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(self.noop, (x,)) for x in xs])


class Arq(Producer):
    packages = ("arq", "redis")

    async def open(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def put(self, x: int) -> None:
        await self.pool.enqueue_job("noop", x)


class Celery(Producer):
    packages = ("celery", "kombu", "redis")

    async def open(self) -> None:
        from benchmarks.peers.tasks_celery import noop

        self.noop = noop

    def put(self, x: int) -> None:
        self.noop.delay(x)


class Dramatiq(Producer):
    packages = ("dramatiq", "redis")

    async def open(self) -> None:
        from benchmarks.peers.tasks_dramatiq import noop

        self.noop = noop

    def put(self, x: int) -> None:
        self.noop.send(x)


class Beanstalkd(Producer):
    packages = ("greenstalk",)

    async def open(self) -> None:
        import greenstalk

        port = int(self.url.rsplit(":", 1)[1])
        self.client = greenstalk.Client(("127.0.0.1", port), use=QUEUE)

    async def close(self) -> None:
        self.client.close()

    def put(self, x: int) -> None:
        self.client.put(str(x))


class Procrastinate(Producer):
    packages = ("procrastinate", "psycopg", "psycopg-pool")
    has_bulk = True

    async def open(self) -> None:
        from benchmarks.peers.tasks_procrastinate import app, noop

        self.app, self.noop = app, noop
        await app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def put(self, x: int) -> None:
        await self.noop.defer_async(x=x)

    async def put_many(self, xs: list[int]) -> None:
        await self.noop.batch_defer_async(*({"x": x} for x in xs))

    async def reset(self) -> None:
        await self.app.connector.execute_query_async(
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"
        )
        await self.app.schema_manager.apply_schema_async()


class Tqueues(Producer):
    packages = ("tqueues", "aiohttp")
    method = "benchmarks.peers.tasks_tqueues:noop"

    async def open(self) -> None:
        from tqueues.client import BlockingClient, Client

        # The HTTP batch enqueue (one request, one durable write) where this version has it.
        self.has_bulk = hasattr(Client, "put_many")
        self.client = Client(self.url)
        # Single calls as a synchronous program (a web application) makes them, as the RQ,
        # Celery and Dramatiq producers do: the blocking client.
        self.blocking = BlockingClient(self.url)
        self.closing: list[Callable[[], Awaitable[None]]] = []
        await self.client.create_queue(QUEUE)

    async def close(self) -> None:
        for close in self.closing:
            await close()
        await self.client.close()
        self.blocking.close()

    def put(self, x: int) -> None:
        self.blocking.put(QUEUE, self.method, [x])

    async def put_async(self, x: int) -> None:
        await self.client.put(QUEUE, self.method, [x])

    async def put_many(self, xs: list[int]) -> None:
        await self.client.put_many(QUEUE, [{"method": self.method, "args": [x]} for x in xs])

    async def open_stream(self) -> Callable[[int], Awaitable[Any]] | None:
        if not hasattr(self.client, "job_stream"):  # versions before the job stream
            return None
        stream = self.client.job_stream(QUEUE)
        await stream.connect()
        self.closing.append(stream.close)

        async def put(x: int) -> None:
            await stream.put(self.method, [x])

        return put


PRODUCERS: dict[str, type[Producer]] = {
    "rq": RQ,
    "arq": Arq,
    "celery": Celery,
    "dramatiq": Dramatiq,
    "beanstalkd": Beanstalkd,
    "procrastinate": Procrastinate,
    "tqueues": Tqueues,
}


async def _call(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def _chunks(n: int) -> Iterable[list[int]]:
    for start in range(0, n, CHUNK):
        yield list(range(start, min(n, start + CHUNK)))


async def enqueue(producer: Producer, n: int) -> dict[str, Any]:
    """W1: ``n`` single calls, timed."""
    return await _timed(producer.put, n)


async def enqueue_async(producer: Producer, n: int) -> dict[str, Any]:
    """W1 (tqueues): ``n`` single calls of the asyncio client, timed."""
    put = getattr(producer, "put_async", None)
    return {"unsupported": True} if put is None else await _timed(put, n)


async def _timed(put: Callable[[int], Any], n: int) -> dict[str, Any]:
    """``put(x)`` (a plain or an async function) for each of ``n`` jobs, one at a time."""
    is_async = inspect.iscoroutinefunction(put)
    started = time.perf_counter()
    if is_async:
        for x in range(n):
            await put(x)
    else:
        for x in range(n):
            put(x)
    return {"seconds": time.perf_counter() - started, "jobs": n}


async def bulk(producer: Producer, n: int) -> dict[str, Any]:
    """W1 bulk: ``n`` jobs in calls of ``CHUNK``, timed."""
    if not producer.has_bulk:
        return {"unsupported": True}
    started = time.perf_counter()
    for xs in _chunks(n):
        await _call(producer.put_many(xs))
    return {"seconds": time.perf_counter() - started, "jobs": n}


async def stream(producer: Producer, n: int) -> dict[str, Any]:
    """W1 stream: ``n`` single calls on the producer stream, timed (opening it is not)."""
    put = await producer.open_stream()
    if put is None:
        return {"unsupported": True}
    return await _timed(put, n)


async def fill(producer: Producer, n: int) -> dict[str, Any]:
    """W2 set-up: queue ``n`` jobs (bulk where the system has it)."""
    return await (bulk(producer, n) if producer.has_bulk else enqueue(producer, n))


async def latency(
    producer: Producer, n: int, port: int, warmup: int = 5, *, stream: bool = False
) -> dict[str, Any]:
    """W3: enqueue one job (on the producer stream if ``stream``), wait for its start
    datagram, ``warmup + n`` times."""
    put = await producer.open_stream() if stream else producer.put
    if put is None:
        return {"unsupported": True}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    samples: list[float] = []
    try:
        for x in range(warmup + n):
            # The first job may wait for the worker to finish starting; later ones are quick.
            sock.settimeout(60.0 if x == 0 else 10.0)
            enqueued = time.time()
            await _call(put(x))
            while True:
                started, _, arg = sock.recv(200).decode().partition(" ")
                if arg == str(x):
                    break
            if x >= warmup:
                samples.append((float(started) - enqueued) * 1000)
            await asyncio.sleep(0.01)  # let the worker go back to waiting: it is idle again
    finally:
        sock.close()
    return {"ms": samples}


def versions(producer: type[Producer]) -> dict[str, str]:
    """The installed versions of the system's packages."""
    found = {}
    for name in producer.packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one action; its JSON-able result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(PRODUCERS))
    parser.add_argument(
        "action",
        choices=[
            "enqueue",
            "enqueue_async",
            "bulk",
            "stream",
            "fill",
            "latency",
            "reset",
            "versions",
        ],
    )
    parser.add_argument("--url", default="")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--udp", type=int, default=0)
    parser.add_argument("--stream", action="store_true", help="latency: on the producer stream")
    options = parser.parse_args(argv)
    cls = PRODUCERS[options.system]
    if options.action == "versions":
        return versions(cls)
    producer = cls(options.url)
    await producer.open()
    try:
        if options.action == "reset":
            await _call(producer.reset())
            return {}
        if options.action == "latency":
            return await latency(producer, options.jobs, options.udp, stream=options.stream)
        action = {
            "enqueue": enqueue,
            "enqueue_async": enqueue_async,
            "bulk": bulk,
            "stream": stream,
            "fill": fill,
        }[options.action]
        return await action(producer, options.jobs)
    finally:
        await producer.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
    sys.stdout.flush()
