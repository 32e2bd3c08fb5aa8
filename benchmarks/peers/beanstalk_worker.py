"""A minimal beanstalkd worker (greenstalk has no worker of its own): reserve, run, delete.

``python -m benchmarks.peers.beanstalk_worker PORT``; runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import greenstalk

from benchmarks.peers import sink


def noop(x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)


def main(port: int) -> None:
    """Reserve jobs from the ``bench`` tube and run each until told to stop."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with greenstalk.Client(("127.0.0.1", port), watch="bench") as client:
        while not stopping:
            try:
                job = client.reserve(timeout=1)
            except greenstalk.TimedOutError:
                continue
            noop(int(job.body))
            client.delete(job)


if __name__ == "__main__":
    main(int(sys.argv[1]))
