"""Blocking HTTP/1.1 for :class:`~tqueues.client.blocking.BlockingClient`: libcurl (pycurl).

:class:`CurlTransport` makes one request at a time per thread, each on that thread's own
libcurl handle, so every thread keeps one keep-alive connection to the dispatcher and no
call hops to another thread or event loop. libcurl reconnects by itself when the
dispatcher closed an idle connection. Proxies named in the environment are ignored, as
the asyncio client ignores them; a child process after ``fork`` opens connections of its
own rather than sharing its parent's. Over HTTPS it trusts the certificates Python's
default SSL context trusts, as the asyncio client does. pycurl (and libcurl with it) is
loaded by the first request, not by importing this module: a worker, which never uses
it, does not pay for it. pycurl comes with the ``blocking`` extra (``pip install
'tqueues[blocking]'``); without it, making a transport raises an ImportError that says so.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pycurl


#: Why a transport cannot be made without pycurl, and the install that fixes it.
MISSING_PYCURL = (
    "tqueues.BlockingClient needs pycurl, which the 'blocking' extra installs: "
    "pip install 'tqueues[blocking]'"
)


class TransportError(Exception):
    """The request did not get an answer: the connection failed, broke or timed out.
    ``sent`` is False when no connection was made (refused, or the host unknown), so the
    dispatcher cannot have seen the request."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


#: libcurl's codes for "no connection was made": CURLE_COULDNT_RESOLVE_HOST,
#: CURLE_COULDNT_CONNECT.
_NOT_SENT = frozenset({6, 7})


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: its status, its Content-Type header ("" without one), its body."""

    status: int
    content_type: str
    body: bytes


class CurlTransport:
    """Requests to one dispatcher; safe to share between threads. ``token`` is sent as
    ``Authorization: Bearer <token>``."""

    def __init__(self, *, token: str | None = None) -> None:
        """Raises ImportError (:data:`MISSING_PYCURL`) when pycurl is not installed."""
        if importlib.util.find_spec("pycurl") is None:
            raise ImportError(MISSING_PYCURL, name="pycurl")
        self._auth = [f"Authorization: Bearer {token}"] if token else []
        # Over HTTPS, trust what Python's default SSL context trusts (so the asyncio
        # client too; SSL_CERT_FILE and SSL_CERT_DIR included), not libcurl's own default.
        trusted = ssl.get_default_verify_paths()
        self._cafile = trusted.cafile if trusted.cafile and os.path.isfile(trusted.cafile) else None
        self._capath = trusted.capath if trusted.capath and os.path.isdir(trusted.capath) else None
        # "Expect:" stops libcurl from waiting for a 100-continue before a large body.
        self._json_headers = ["Content-Type: application/json", "Expect:", *self._auth]
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Every live thread's handle, for close(). Only its thread's local holds a handle
        #: for good: when a thread ends, its handle is collected and its connection closed
        #: (a server that starts a thread per request would otherwise pile them up).
        self._handles: weakref.WeakSet[pycurl.Curl] = weakref.WeakSet()
        self._closed = False

    def _handle(self) -> pycurl.Curl:
        """This thread's handle (a new one in a child process after fork)."""
        import pycurl

        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            fresh = pycurl.Curl()
            with self._lock:
                if self._closed:
                    fresh.close()
                    raise TransportError("the client is closed")
                self._handles.add(fresh)
            local.handle, local.pid = fresh, os.getpid()
        handle: pycurl.Curl = local.handle
        return handle

    def request(self, method: str, url: str, body: bytes | None, timeout: float) -> Answer:
        """Send ``method url`` with the JSON ``body`` (None: no body) and wait up to
        ``timeout`` seconds for the whole answer. Raises TransportError when no answer
        came. libcurl sends a request again by itself only when it went out on a kept
        connection that turned out closed before any answer came (the dispatcher closed
        it idle, or died): as with any HTTP client that keeps connections, a put whose
        dispatcher died between storing it and answering may then be stored twice."""
        import pycurl

        handle = self._handle()
        chunks: list[bytes] = []
        # reset() keeps the handle's live connection; every option is set again below.
        handle.reset()
        handle.setopt(pycurl.URL, url)
        # The path as given: libcurl would otherwise resolve "." and ".." segments in it.
        handle.setopt(pycurl.PATH_AS_IS, 1)
        handle.setopt(pycurl.NOSIGNAL, 1)  # no SIGALRM for timeouts: threads are safe
        handle.setopt(pycurl.PROXY, "")  # ignore http_proxy and friends
        handle.setopt(pycurl.TIMEOUT_MS, max(1, round(timeout * 1000)))
        handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
        if url.startswith("https:"):
            if self._cafile:
                handle.setopt(pycurl.CAINFO, self._cafile)
            if self._capath:
                handle.setopt(pycurl.CAPATH, self._capath)
        if body is None and method in ("GET", "DELETE"):
            handle.setopt(pycurl.HTTPGET, 1)
            headers = self._auth
        else:
            handle.setopt(pycurl.POSTFIELDS, body or b"")  # Content-Length: 0 without one
            headers = self._auth if body is None else self._json_headers
        handle.setopt(pycurl.CUSTOMREQUEST, method)
        if headers:
            handle.setopt(pycurl.HTTPHEADER, headers)
        try:
            handle.perform()
        except pycurl.error as exc:
            code, message = exc.args if len(exc.args) == 2 else (0, str(exc))
            raise TransportError(
                f"{message} (libcurl error {code})", sent=code not in _NOT_SENT
            ) from None
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        content_type = handle.getinfo(pycurl.CONTENT_TYPE) or ""
        return Answer(status, content_type, b"".join(chunks))

    def close(self) -> None:
        """Close every thread's connection; later requests raise TransportError.
        Idempotent. Call it once no thread is in a request."""
        with self._lock:
            self._closed = True
            handles = list(self._handles)
            self._handles.clear()
        for handle in handles:
            handle.close()
