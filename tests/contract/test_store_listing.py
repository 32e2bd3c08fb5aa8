"""Listing pages cut by bytes (``list_jobs(max_bytes=...)``), on every store.

What the dispatcher's listings and the WebSocket snapshot rely on: a page of large jobs
ends once its jobs reach ``max_bytes``, holds at least one job, and its cursor continues
where it stopped, so that following the cursors still yields every job once, in order.
"""

from __future__ import annotations

from tqueues.jobs import JobStatus, NewJob, QueueConfig
from tqueues.stores.base import Store

BIG = 20_000  #: characters of each large job's argument


async def pages_of(store: Store, **options: object) -> list[list[str]]:
    """The ids of every page of queue ``q``, following the cursors to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await store.list_jobs("q", cursor=cursor, **options)  # type: ignore[arg-type]
        pages.append([job.id for job in page.jobs])
        if (cursor := page.next_cursor) is None:
            return pages
        assert len(pages) < 100, "the cursors do not advance"


async def test_a_page_ends_once_its_jobs_reach_max_bytes(store: Store) -> None:
    # Given seven jobs of about 20 kB and a small one
    await store.create_queue(QueueConfig("q"))
    ids = [(await store.put(NewJob("q", "m:f", args=["x" * BIG, i]))).id for i in range(7)]
    ids.append((await store.put(NewJob("q", "m:f"))).id)
    # When pages may hold 100 jobs but only 50,000 bytes
    pages = await pages_of(store, limit=100, max_bytes=50_000)
    # Then each page stops at the job that takes it past 50,000 bytes (the third), and the
    # cursors yield every job once, in order
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [job_id for page in pages for job_id in page] == ids


async def test_a_job_larger_than_max_bytes_is_a_page_of_its_own(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    ids = [(await store.put(NewJob("q", "m:f", args=["x" * BIG]))).id for _ in range(3)]
    assert await pages_of(store, limit=100, max_bytes=1_000) == [[job_id] for job_id in ids]


async def test_a_page_cut_by_bytes_at_the_last_job_is_the_last_page(store: Store) -> None:
    # Three jobs of 20 kB under a cap of 50,000 bytes: the third passes the cap, and no
    # job follows it, so the page says it is the last.
    await store.create_queue(QueueConfig("q"))
    ids = [(await store.put(NewJob("q", "m:f", args=["x" * BIG]))).id for _ in range(3)]
    page = await store.list_jobs("q", max_bytes=50_000)
    assert ([job.id for job in page.jobs], page.next_cursor) == (ids, None)


async def test_max_bytes_applies_within_a_status_and_with_a_limit(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    pending = [(await store.put(NewJob("q", "m:f", args=["x" * BIG]))).id for _ in range(5)]
    await store.put(NewJob("q", "m:f", delay=3600))  # delayed: not listed as pending
    by_status = await pages_of(store, status=JobStatus.PENDING, limit=100, max_bytes=30_000)
    assert by_status == [pending[0:2], pending[2:4], pending[4:]]
    # A limit smaller than what the bytes allow still ends the page first
    by_limit = await pages_of(store, status=JobStatus.PENDING, limit=1, max_bytes=10**9)
    assert by_limit == [[job_id] for job_id in pending] + [[]]


async def test_a_page_of_small_jobs_is_whole_and_one_cut_late_goes_on(store: Store) -> None:
    # Given 300 jobs of about 1 kB
    await store.create_queue(QueueConfig("q"))
    new = [NewJob("q", "m:f", args=["x" * 1000]) for _ in range(300)]
    ids = [job.id for job in await store.put_many(new)]
    # A cap they stay under makes pages of ``limit`` jobs (a store may read them in parts)
    whole = await pages_of(store, limit=250, max_bytes=10**8)
    assert [len(page) for page in whole] == [250, 50]
    assert [job_id for page in whole for job_id in page] == ids
    # And a cap of 60,000 bytes cuts pages of some dozens of jobs, every job once, in order
    cut = await pages_of(store, limit=100, max_bytes=60_000)
    assert all(32 < len(page) < 100 for page in cut[:-1]), [len(page) for page in cut]
    assert [job_id for page in cut for job_id in page] == ids
