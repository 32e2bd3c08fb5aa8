"""Where a benchmark job records the moment it started: a file line or a UDP datagram.

The benchmark sets ``TQBENCH_SINK`` in each worker's environment:

* ``file:DIR``: one line of ``LINE`` bytes (``time.time()``) appended to ``DIR/<pid>``
  per job; the benchmark counts lines by file size and reads the times at the end (W2);
* ``udp:PORT``: one datagram ``"<time.time()> <arg>"`` to 127.0.0.1:PORT per job (W3).

Nothing is buffered: each record is one ``write``/``sendto`` system call, the same cost
for every system.
"""

from __future__ import annotations

import os
import socket
import time

#: Bytes per file record: ``"%17.6f\n"``.
LINE = 18

_state: dict[str, object] = {}


def _target() -> tuple[str, object]:
    pid = os.getpid()
    if _state.get("pid") != pid:  # first call in this process (or after a fork)
        spec = os.environ.get("TQBENCH_SINK", "")
        kind, _, where = spec.partition(":")
        if kind == "file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            _state["target"] = ("file", os.open(os.path.join(where, str(pid)), flags, 0o644))
        elif kind == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _state["target"] = ("udp", (sock, ("127.0.0.1", int(where))))
        else:
            _state["target"] = ("none", None)
        _state["pid"] = pid
    return _state["target"]  # type: ignore[return-value]


def record(arg: object) -> None:
    """Record that the job with argument ``arg`` starts now."""
    now = time.time()
    kind, target = _target()
    if kind == "file":
        os.write(target, b"%17.6f\n" % now)  # type: ignore[arg-type]
    elif kind == "udp":
        sock, address = target  # type: ignore[misc]
        sock.sendto(f"{now:.6f} {arg}".encode(), address)
