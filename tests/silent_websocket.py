"""A WebSocket client that does not read: the slow consumer of the change stream's tests.

It connects over a plain socket whose receive buffer is made small before it connects
(so the kernel holds next to nothing for it, and whatever the server cannot send stays
with the server), does the opening handshake, then reads nothing until a test calls
:meth:`SilentWebSocket.read_until_close`. Loopback only; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

RCVBUF = 4096  #: bytes of the client's receive buffer (the kernel doubles it).


class SilentWebSocket:
    """One client socket, handshake done, nothing read past it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str, *, timeout: float = 10
    ) -> SilentWebSocket:
        """Connect to ``host:port`` and upgrade ``path``; raises ConnectionError when the
        server answers anything but 101, TimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                key = base64.b64encode(os.urandom(16)).decode()
                request = (
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                )
                await loop.sock_sendall(sock, request.encode())
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    byte = await loop.sock_recv(sock, 1)  # nothing past the headers is read
                    if not byte:
                        raise ConnectionError(f"closed during the handshake after {head!r}")
                    head += byte
        except BaseException:
            sock.close()
            raise
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionError(f"no upgrade: {head!r}")
        return cls(sock)

    async def read_until_close(self, *, timeout: float = 10) -> tuple[list[bytes], int | None, str]:
        """Read frames until the server's close frame or the end of the stream: (the text
        frames' payloads, the close code or None when the stream ended without one, the
        close reason). Raises TimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        buffer, texts = b"", []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await loop.sock_recv(self.sock, 1 << 20)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    return texts, None, ""
                buffer += chunk
                while (frame := _frame(buffer)) is not None:
                    opcode, payload, buffer = frame
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        return texts, code, payload[2:].decode()
                    if opcode == 0x1:
                        texts.append(payload)

    def close(self) -> None:
        self.sock.close()


def _frame(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """The first whole (unmasked, unfragmented) frame of ``buffer`` as (opcode, payload,
    what follows), or None while it is incomplete."""
    if len(buffer) < 2:
        return None
    opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,), start = struct.unpack("!H", buffer[2:4]), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,), start = struct.unpack("!Q", buffer[2:10]), 10
    if len(buffer) < start + length:
        return None
    return opcode, buffer[start : start + length], buffer[start + length :]
