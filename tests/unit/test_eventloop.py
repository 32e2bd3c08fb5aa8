"""The command lines' event loop runs with the collector's thresholds of a server."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tqueues import eventloop


def test_the_loop_runs_with_the_servers_collector_thresholds_and_restores_them() -> None:
    before = gc.get_threshold()

    async def main() -> tuple[int, ...]:
        await asyncio.sleep(0)
        return gc.get_threshold()

    # While a command line's loop runs, young collections come every 10,000 allocations
    assert eventloop.run(main()) == eventloop.GC_THRESHOLDS == (10_000, 10, 10)
    # And afterwards the thresholds are what they were, even when the main coroutine raised
    assert gc.get_threshold() == before

    async def failing() -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        eventloop.run(failing())
    assert gc.get_threshold() == before
