"""``GET /queues/{name}/jobs/{id}/explain``: why a job is not running (see
:mod:`tqueues.explain`)."""

from __future__ import annotations

from aiohttp import web

from tqueues import clock
from tqueues.dispatcher.rest import RestView, json_response
from tqueues.explain import MAX_AHEAD, explain
from tqueues.jobs import JobStatus


class JobExplain(RestView):
    """``/queues/{name}/jobs/{id}/explain``."""

    async def get(self) -> web.Response:
        """The job's situation in words and fields (Explanation); 404 ``job_not_found``."""
        job = await self.store.get(self.queue, self.job_id)
        config = await self.store.get_queue(self.queue)
        ahead = (
            await self.store.count_ahead(job, MAX_AHEAD)
            if job.status is JobStatus.PENDING
            else None
        )
        outstanding = (
            await self.store.dependents.outstanding(job) if job.status is JobStatus.WAITING else ()
        )
        workers = await self.store.list_workers()
        now = clock.now()
        paused = config.is_paused(now)
        return json_response(
            explain(
                job,
                config,
                ahead=ahead,
                workers=workers,
                now=now,
                paused=paused,
                paused_until=config.paused_until if paused else None,
                outstanding=outstanding,
            )
        )


__all__ = ["JobExplain"]
