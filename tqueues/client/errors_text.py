"""Transport errors in words a person reads.

:func:`connection_error_text` turns what a request that got no answer raised (aiohttp's
exceptions, the OS's) into a short phrase without Python reprs: ``connection refused``,
``cannot resolve host name 'x': Name or service not known``, ``no answer within 35 s``,
``the connection closed before an answer``, ``TLS certificate not trusted: ...``. The
clients build their :class:`~tqueues.errors.DispatcherUnavailable` from it (``cannot
reach the dispatcher at http://127.0.0.1:8080/: connection refused``), so whatever prints
that message (the worker's log, the ``tqueues`` command line) reads the same.
"""

from __future__ import annotations

import os
import ssl

import aiohttp


def _sentence_case(text: str) -> str:
    """``Connection refused`` as ``connection refused`` (``TLS ...`` left as it is)."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _os_error_text(exc: OSError) -> str:
    """What the system said: the text of its error number (asyncio's ``Connect call
    failed ('127.0.0.1', 9)`` for a refused connection says less than ``connection
    refused``), else its own text."""
    if isinstance(exc.errno, int) and exc.errno > 0:
        return _sentence_case(os.strerror(exc.errno))
    if exc.strerror:
        return _sentence_case(str(exc.strerror))
    return _sentence_case(str(exc)) or type(exc).__name__


def _tls_text(exc: BaseException) -> str:
    """An ssl error's reason (``CERTIFICATE_VERIFY_FAILED``'s verify message when there is
    one)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _connector_text(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection could not be opened."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host name {exc.host!r}: {_os_error_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted: {_tls_text(exc.certificate_error)}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed: {_tls_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot reach the proxy: {_os_error_text(exc.os_error)}"
    return _os_error_text(exc.os_error)


def _answer_text(exc: aiohttp.ClientError) -> str | None:
    """What was wrong with an answer (or the URL), if that is what ``exc`` says."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the WebSocket was refused (HTTP {exc.status})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}".rstrip()
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL {str(exc.url)!r}"
    return None


def connection_error_text(exc: BaseException, *, timeout: float | None = None) -> str:
    """What went wrong with a request, in a few words: no repr, no traceback.

    ``exc`` is what the request raised; ``timeout`` (seconds), when known, is how long the
    request was given (said for a request that timed out). Never raises.
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connector_text(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer"
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts and asyncio's
        return f"no answer within {timeout:g} s" if timeout is not None else "no answer in time"
    if isinstance(exc, aiohttp.ClientError) and (text := _answer_text(exc)) is not None:
        return text
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {_tls_text(exc)}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return _os_error_text(exc)
    return _sentence_case(str(exc)) or type(exc).__name__


__all__ = ["connection_error_text"]
