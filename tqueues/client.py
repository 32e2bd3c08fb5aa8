"""An asyncio client of the documented ``/`` API, used by the worker and by scripts.

One :class:`aiohttp.ClientSession` per client, kept alive across calls. Errors come back
as the typed exceptions of :mod:`tqueues.errors` (the dispatcher's JSON ``error`` code
names the class); an unreachable dispatcher raises
:class:`~tqueues.errors.DispatcherUnavailable`.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp

from tqueues.errors import DispatcherUnavailable, QueueEmpty, TqueuesError

JSONDict = dict[str, Any]


def _error_classes(root: type[TqueuesError] = TqueuesError) -> dict[str, type[TqueuesError]]:
    classes: dict[str, type[TqueuesError]] = {}
    for cls in root.__subclasses__():
        classes.setdefault(cls.code, cls)
        classes.update({k: v for k, v in _error_classes(cls).items() if k not in classes})
    return classes


ERRORS = _error_classes()


class Client:
    """Talks to one dispatcher at ``endpoint_url``. Use ``async with Client(url) as client:``.

    ``timeout`` bounds each call, in seconds, on top of any long-poll ``wait``; ``token``
    is sent as ``Authorization: Bearer <token>``.
    """

    def __init__(
        self, endpoint_url: str, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.endpoint_url = endpoint_url if endpoint_url.endswith("/") else endpoint_url + "/"
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        params: dict[str, str],
        body: Any = None,
        *,
        wait: float = 0.0,
    ) -> Any:
        """One call to ``/``; the decoded answer. Raises the typed error the dispatcher names."""
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait)
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self.session.request(
                method,
                self.endpoint_url,
                params=params,
                data=data,
                headers=headers,
                timeout=timeout,
            ) as response:
                text = await response.text()
                status = response.status
                is_json = response.content_type == "application/json"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DispatcherUnavailable(
                f"cannot reach the dispatcher at {self.endpoint_url}: {exc!r}"
            ) from exc
        payload = json.loads(text) if is_json and text else text
        if status < 400:
            return payload
        if isinstance(payload, dict) and payload.get("error") in ERRORS:
            raise ERRORS[payload["error"]](payload.get("message"), status_code=status)
        error = TqueuesError(f"HTTP {status}: {payload}", status_code=status)
        raise error

    async def create_queue(self, queue: str, **settings: Any) -> None:
        """Create ``queue`` unless it exists; ``settings``: ``ttr``, ``max_attempts``."""
        await self.request("PUT", {"queue": queue}, settings or None)

    async def put(
        self,
        queue: str,
        method: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: JSONDict | None = None,
        **options: Any,
    ) -> JSONDict:
        """Enqueue a job; the stored job. ``options``: priority, ttr, max_attempts, delay."""
        body = {
            "queue": queue,
            "method": method,
            "args": list(args),
            "kwargs": kwargs or {},
            **options,
        }
        result: JSONDict = await self.request("POST", {}, body)
        return result

    async def take(
        self, queue: str, *, wait: float = 0.0, worker: str | None = None
    ) -> JSONDict | None:
        """The next job of ``queue`` with its lease, waiting up to ``wait`` seconds, or None."""
        params = {"queue": queue, "wait": repr(wait)}
        if worker:
            params["worker"] = worker
        try:
            job: JSONDict = await self.request("GET", params, wait=wait)
        except QueueEmpty:
            return None
        return job

    async def get(self, queue: str, job_id: str) -> JSONDict:
        """Read one job."""
        job: JSONDict = await self.request("GET", {"queue": queue, "id": job_id})
        return job

    @staticmethod
    def _params(queue: str, job_id: str, lease: str | None) -> dict[str, str]:
        params = {"queue": queue, "id": job_id}
        if lease is not None:
            params["lease"] = lease
        return params

    async def update(
        self, queue: str, job_id: str, fields: JSONDict, *, lease: str | None = None
    ) -> JSONDict:
        """Merge ``fields`` into the job; with ``lease``, also extend the lease."""
        job: JSONDict = await self.request("PATCH", self._params(queue, job_id, lease), fields)
        return job

    async def finish(
        self, queue: str, job_id: str, *, lease: str | None = None, result: Any = None
    ) -> JSONDict:
        """Mark the job finished with ``result``."""
        job: JSONDict = await self.request(
            "DELETE", self._params(queue, job_id, lease), {"result": result}
        )
        return job

    async def fail(
        self,
        queue: str,
        job_id: str,
        *,
        lease: str | None = None,
        error: str,
        traceback: str | None = None,
        permanent: bool = False,
    ) -> JSONDict:
        """Report a failed run (retried while attempts remain; failed at once if permanent)."""
        body = {"error": error, "traceback": traceback, "permanent": permanent}
        job: JSONDict = await self.request("DELETE", self._params(queue, job_id, lease), body)
        return job

    async def release(
        self, queue: str, job_id: str, *, lease: str | None = None, delay: float = 0.0
    ) -> JSONDict:
        """Give a taken job back untried."""
        job: JSONDict = await self.request(
            "DELETE", self._params(queue, job_id, lease), {"release": True, "delay": delay}
        )
        return job
