"""The numbers the dispatcher and its clients must agree on, each written once.

The dispatcher enforces these bounds (its request models refuse more with a 400 naming
the field, and its OpenAPI document states them); the clients, the worker and the
``tqueues`` command stay within them (a worker never asks for more than MAX_TAKE jobs at
once, a reporter never sends more than MAX_OUTCOMES outcomes in one request, the command
kicks MAX_KICK jobs a round). The defaults are where a dispatcher listens unless told
otherwise and where the clients look for one.

Plain constants with no imports: every install has them (the base install, a producer's,
as well as the dispatcher's).
"""

from __future__ import annotations

MAX_BATCH = 1000  #: jobs one enqueue request (or job stream message) may carry.
MAX_TAKE = 100  #: jobs one take (or an outcome report's ``take``) may ask for.
MAX_TAKE_QUEUES = 32  #: queues one take may name.
MAX_OUTCOMES = 1000  #: outcomes one report may carry.
MAX_PAGE = 1000  #: jobs one listing page may hold.
DEFAULT_PAGE = 100  #: jobs in a listing page when the request names no ``limit``.
MAX_KICK = 10_000  #: the largest ``bound`` of a queue kick.
MAX_AFTER = 100  #: jobs one job may wait for (its ``after``).
#: The longest job id, in bytes of UTF-8: RethinkDB's limit on a primary key (an id no
#: store could hold is refused on every store alike; see :mod:`tqueues.ids`).
MAX_ID_BYTES = 127
#: The longest key of a unique job (#25), in characters (see :mod:`tqueues.jobs`).
MAX_KEY = 256
#: The shortest and the longest interval of a periodic job's schedule, in seconds.
MIN_EVERY = 1.0
MAX_EVERY = 366 * 86_400.0
#: Seconds a taken job's lease lasts when neither the job nor its queue says.
DEFAULT_TTR = 60.0
#: The longest long-poll a dispatcher allows unless told otherwise (``--max_wait``),
#: seconds; the longest one a worker asks for.
DEFAULT_MAX_WAIT = 300.0

DEFAULT_HOST = "127.0.0.1"  #: where a dispatcher listens by default: loopback only.
DEFAULT_PORT = 8080
DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"  #: ``--listen``'s default.
#: The dispatcher the clients, the worker and the ``tqueues`` command talk to by default.
DEFAULT_URL = f"http://{DEFAULT_LISTEN}/"

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_PAGE",
    "DEFAULT_PORT",
    "DEFAULT_TTR",
    "DEFAULT_URL",
    "MAX_AFTER",
    "MAX_BATCH",
    "MAX_EVERY",
    "MAX_ID_BYTES",
    "MAX_KEY",
    "MAX_KICK",
    "MAX_OUTCOMES",
    "MAX_PAGE",
    "MAX_TAKE",
    "MAX_TAKE_QUEUES",
    "MIN_EVERY",
]
