"""The dispatcher's access log (``--access_log``; off by default).

One INFO record a request on the logger ``tqueues.access``: ``METHOD PATH STATUS
DURATION``, and as fields (``--log_format json``) ``method``, ``path``, ``status``,
``duration`` (seconds), ``remote`` and ``bytes``. A query's ``access_token`` values (a
WebSocket's token, :mod:`tqueues.dispatcher.auth`) are written ``***``; no header is
logged.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

log = logging.getLogger("tqueues.access")
HIDDEN = "***"


def shown_path(request: BaseRequest) -> str:
    """The request's path and query, ``access_token`` values hidden."""
    url = request.rel_url
    if "access_token" in url.query:
        url = url.update_query({"access_token": HIDDEN})
    return str(url)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger interface, writing one structured record a request."""

    @property
    def enabled(self) -> bool:
        """Whether records at INFO would be written (else aiohttp skips :meth:`log`)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Log ``request``, answered ``response`` after ``time`` seconds."""
        path = shown_path(request)
        self.logger.info(
            "%s %s %d %.1fms",
            request.method,
            path,
            response.status,
            time * 1000,
            extra={
                "action": "access",
                "method": request.method,
                "path": path,
                "status": response.status,
                "duration": round(time, 6),
                "remote": request.remote,
                "bytes": response.body_length,
            },
        )
