"""The dispatcher's HTTP server: aiohttp's, with the guards a server facing clients it does
not trust needs and aiohttp lacks.

* **Request heads have a deadline.** A request's line and headers must all arrive within
  ``--header_timeout`` seconds of its first byte (of the connection's opening, for its
  first request); a connection that dawdles is answered 408 and closed. Without it a
  client sending headers a byte at a time holds a connection (a file descriptor) forever.
  An idle keep-alive connection (between requests) has no such deadline: it sends nothing.
* **Connections are capped** at ``--max_connections``. Past it, a new connection first
  takes the place of the connection that has been idle longest (a keep-alive between
  requests, or one whose head is still arriving: neither is being served); when every
  connection is in a request (long-polls, WebSockets), it is answered 503 and closed at
  once. So an operator's ``/health`` gets through as long as any connection is idle, and
  the dispatcher never runs out of file descriptors (which stops ``accept``).
* **Malformed requests are answered, not logged.** A request aiohttp cannot parse (a bad
  request line, a NUL in a header, a line too long, a broken chunked or compressed body)
  is answered 400 with a JSON body that does not quote it, and counted; the log gets at
  most one line every :data:`SUMMARY_INTERVAL` seconds saying how many were refused and
  why, never the request's bytes (which may hold a token) nor a traceback. aiohttp logs
  each one with its traceback and the raw line.
* **A 408 is not lost to a reset.** A connection closed while its client's bytes are
  still arriving is reset by the kernel, and the client may never read the answer sent
  just before. So a connection answered 408 is half-closed after the answer, and what
  still arrives is read and dropped until the client closes it or :data:`LINGER` seconds
  pass (the lingering close of RFC 9112, section 9.6). It counts against the cap until
  closed, and is the first closed for room.

:func:`raise_open_files_limit` raises the process's soft limit of open files to its hard
limit; :func:`connection_limit` sizes the cap from it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import resource
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from tqueues import codec

log = logging.getLogger(__name__)

#: Seconds between two log lines about refused requests and connections, at most.
SUMMARY_INTERVAL = 10.0
#: File descriptors kept for everything but client connections (the store's files and
#: connections, the log, the event loop): an eighth of the limit, at least this many.
RESERVED_FILES = 64
#: Seconds a connection answered 408 is still read (and what arrives dropped) after its
#: answer, at most, before it is closed: a lingering close (RFC 9112, section 9.6).
LINGER = 2.0


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error body, for a connection that has no
    request to answer through aiohttp."""
    body = codec.dumps({"error": code, "message": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class RefusalLog:
    """Counts what the server refused, by reason and peer, and logs a summary: at once for
    the first refusal after a quiet :data:`SUMMARY_INTERVAL`, else once that interval has
    passed since the last line, and on :meth:`flush`. Never the request's content."""

    def __init__(self, interval: float = SUMMARY_INTERVAL) -> None:
        self.interval = interval
        self._counts: collections.Counter[str] = collections.Counter()
        self._peers: set[str] = set()
        self._last = -interval
        self._timer: asyncio.TimerHandle | None = None
        self.total = 0  #: refusals counted since start.

    def count(self, reason: str, peer: str | None) -> None:
        """Count one refusal for ``reason`` (a fixed phrase: it is logged as is)."""
        self._counts[reason] += 1
        self.total += 1
        if peer and len(self._peers) < 5:
            self._peers.add(peer)
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._last >= self.interval:
            self.flush()
        else:
            self._timer = loop.call_at(self._last + self.interval, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._counts:
            return
        self._last = asyncio.get_running_loop().time()
        what = ", ".join(f"{n} {reason}" for reason, n in self._counts.most_common())
        peers = ", ".join(sorted(self._peers))
        log.warning(
            "refused %s; from %s", what, peers or "unknown peers", extra={"action": "refused"}
        )
        self._counts.clear()
        self._peers.clear()


class Guard:
    """The limits of one server and the connections they are kept on."""

    def __init__(self, header_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.refusals = RefusalLog()
        #: every connection served, oldest first.
        self.connections: dict[GuardedRequestHandler, None] = {}
        #: connections that may be idle (a keep-alive between requests, or a head still
        #: arriving), least recently busy first; checked before one is closed for room.
        self.idle: collections.OrderedDict[GuardedRequestHandler, None] = collections.OrderedDict()

    def make_room(self) -> bool:
        """Close the connection idle longest, for a new one; False if none is idle."""
        idle = self.idle
        while idle:
            handler, _ = idle.popitem(last=False)
            if handler.is_idle():
                handler.close_for_room()
                return True
        return False

    def forget(self, handler: GuardedRequestHandler) -> None:
        """``handler``'s connection is closed or closing: it no longer counts."""
        self.connections.pop(handler, None)
        self.idle.pop(handler, None)


OVER_CAPACITY = _raw_response(
    503,
    "Service Unavailable",
    "too_many_connections",
    "the dispatcher serves as many connections as it may (--max_connections); retry later",
)
HEAD_TOO_SLOW = _raw_response(
    408,
    "Request Timeout",
    "request_timeout",
    "the request's line and headers did not arrive within the dispatcher's --header_timeout",
)
#: A parser's reason may be quoted only if it is a plain phrase (it never quotes bytes then).
_PLAIN_REASON = re.compile(r"[A-Za-z][A-Za-z ,'-]{0,79}")


def _parse_error_reason(exc: HttpProcessingError) -> str:
    first = exc.message.split(":", 1)[0].strip() if isinstance(exc.message, str) else ""
    return first if _PLAIN_REASON.fullmatch(first) else "malformed"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol of one connection, under a :class:`Guard`."""

    __slots__ = (
        "_guard",
        "_head_started",
        "_head_timer",
        "_linger_timer",
        "_lingering",
        "_refused",
        "_requests_open",
    )

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  #: some bytes of the awaited head have arrived.
        self._refused = False  #: closed at once, over the cap.
        #: the transport of a connection answered and closing (see :meth:`_linger`).
        self._lingering: asyncio.Transport | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        #: requests whose head arrived and whose answer is not yet sent.
        self._requests_open = 0

    # -- the connection cap ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if len(guard.connections) >= guard.max_connections and not guard.make_room():
            self._refused = True
            self._force_close = True  # aiohttp ignores whatever arrives now
            guard.refusals.count("connections over --max_connections", _peer(transport))
            refused = cast(asyncio.Transport, transport)
            refused.write(OVER_CAPACITY)
            refused.close()
            return
        guard.connections[self] = None
        guard.idle[self] = None
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return  # aiohttp's server never knew of it
        self._stop_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._lingering = None
        self._guard.forget(self)
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """Whether the connection is open and no request on it is being served: it waits
        for the next request, or for the rest of a head, or it lingers after its answer."""
        if self._lingering is not None:
            return True
        return self._requests_open == 0 and not self._force_close and self.transport is not None

    def close_for_room(self) -> None:
        """Close this idle connection for a new one (its client opens another if it
        needs one, as after a keep-alive timeout); a lingering one (:meth:`_linger`) first."""
        if self._lingering is not None:  # answered already: what it still sends is dropped
            self._guard.forget(self)
            self._lingering.close()
            return
        self._guard.refusals.count("idle connections closed for new ones", self._peer())
        self._guard.forget(self)
        self._stop_head_timer()
        self.force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        # Requests are served one at a time: what is left open is what is queued.
        self._requests_open = len(self._messages)
        guard = self._guard
        if not self._requests_open and self in guard.connections:
            guard.idle[self] = None  # it may now wait, idle, for its next request
            guard.idle.move_to_end(self)
        return answered

    # -- the deadline of a request's head ----------------------------------------------

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        heads = len(self._messages) - queued
        if heads > 0:  # a head arrived whole (or could not be parsed): no deadline
            self._requests_open += heads
            self._stop_head_timer()
            self._guard.idle.pop(self, None)
        elif data and not self._requests_open and not self._force_close:
            # bytes of the next request's head (after an idle keep-alive, the first)
            self._head_started = True
            if self._head_timer is None:
                self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._guard.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_started = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.is_idle():
            return  # a request came in meanwhile
        started, self._head_started = self._head_started, False
        self._guard.refusals.count(
            f"request heads not complete within {self._guard.header_timeout:g} s", self._peer()
        )
        if started and self.transport is not None:
            self._linger(HEAD_TOO_SLOW)
        else:
            self._guard.forget(self)
        self.force_close()

    def _linger(self, answer: bytes) -> None:
        """Send ``answer``, half-close, and close :data:`LINGER` seconds later at most.

        aiohttp lets go of the transport (its :meth:`force_close` then closes nothing);
        what arrives meanwhile is dropped by :meth:`data_received`, and the transport
        closes itself when the client closes its side first. Until closed, the
        connection counts against the cap (it holds a file descriptor) and is the first
        closed for room (:meth:`Guard.make_room`)."""
        transport = self._lingering = cast(asyncio.Transport, self.transport)
        self.transport = None
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()  # after the answer is flushed
        self._linger_timer = self._loop.call_later(LINGER, transport.close)
        self._guard.idle[self] = None
        self._guard.idle.move_to_end(self, last=False)

    # -- malformed requests ---------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        name = type(exc).__name__
        self._guard.refusals.count(f"malformed requests ({name})", request.remote)
        response = web.json_response(
            {
                "error": "bad_http_request",
                "message": f"the request is not valid HTTP/1.1: {_parse_error_reason(exc)}",
            },
            status=status if 400 <= status < 500 else 400,
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            # the client's doing (a body that could not be read), not the dispatcher's
            self._guard.refusals.count(
                f"requests whose body could not be read ({type(exc).__name__})", self._peer()
            )
            return
        super().log_exception(*args, **kwargs)

    def _peer(self) -> str | None:
        return _peer(self.transport)


def _peer(transport: asyncio.BaseTransport | None) -> str | None:
    if transport is None:
        return None
    peername = transport.get_extra_info("peername")
    return str(peername[0]) if isinstance(peername, tuple) and peername else None


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` protocols."""

    def __init__(self, handler: Any, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` serving through a :class:`GuardedServer`."""

    def __init__(self, app: web.Application, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The same server, with the handler kwargs the application and runner gave it.
        return GuardedServer(
            plain.request_handler,
            guard=self.guard,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def connection_limit(open_files: int) -> int:
    """The most client connections the open-files limit leaves room for."""
    return max(1, open_files - max(RESERVED_FILES, open_files // 8))
