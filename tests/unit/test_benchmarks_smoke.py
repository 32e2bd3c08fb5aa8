"""The benchmarks run (on small sizes), so they cannot rot."""

from __future__ import annotations

from pathlib import Path

from benchmarks import deep_queue


async def test_deep_queue_smoke(tmp_path: Path) -> None:
    rows = await deep_queue.main([200, 2000], cycles=50, synchronous="NORMAL")
    assert [row["queued"] for row in rows] == [200, 2000]
    assert all(row["take_us_p50"] > 0 and row["finish_us_p50"] > 0 for row in rows)
    assert "take ratio" in deep_queue.report(rows)
