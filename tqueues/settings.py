"""Settings of the dispatcher and the worker: parsed, converted and validated here only.

The command lines (:mod:`tqueues.cli`) hand their docopt dictionaries to ``from_docopt``;
everything else takes the dataclasses. A bad value raises :class:`SettingsError` with a
message that names the option.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from tqueues.errors import TqueuesError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_ENDPOINT = "http://127.0.0.1:8080/"


class SettingsError(TqueuesError):
    """An option has a value that cannot be used."""

    status = 400
    code = "bad_option"


def _float(value: Any, option: str, *, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{option} must be a number, not {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{option} must be between {low:g} and {high:g}, not {value}")
    return number


def _int(value: Any, option: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{option} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{option} must be between {low} and {high}, not {value}")
    return number


def _loglevel(value: Any) -> str:
    level = str(value or "INFO").upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"--loglevel must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"--listen takes HOST:PORT, not {value!r}")
    return host.strip("[]"), _int(port, "the --listen port", low=0, high=65535)


@dataclasses.dataclass(frozen=True, slots=True)
class RethinkDBSettings:
    """Where the RethinkDB store connects."""

    host: str = "localhost"
    port: int = 28015
    db: str = "tqueues"
    user: str = "admin"
    password: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """Everything ``tqueues_dispatcher`` can be told."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    data_dir: str = "./tqueues-data"  #: the embedded store's directory.
    sqlite_synchronous: str = "FULL"
    rethinkdb: RethinkDBSettings | None = None  #: set: use the RethinkDB store.
    allowed_domains: tuple[str, ...] = ()  #: CORS origins.
    loglevel: str = "INFO"
    max_wait: float = 300.0  #: the longest long-poll, seconds.
    max_body: int = 1024 * 1024  #: the largest request body, bytes.
    reap_interval: float = 0.5  #: seconds between lease/delay sweeps.
    retry_base: float = 1.0  #: seconds before the first retry of a failed job.

    @classmethod
    def from_docopt(cls, args: Mapping[str, Any]) -> DispatcherSettings:
        """Build from ``tqueues_dispatcher``'s parsed command line; raises SettingsError."""
        host, port = parse_listen(args.get("--listen") or "127.0.0.1:8080")
        rethink_options = ("--host", "--port", "--db", "--user", "--password")
        rethinkdb = None
        if any(args.get(option) for option in rethink_options):
            rethinkdb = RethinkDBSettings(
                host=args.get("--host") or "localhost",
                port=_int(args.get("--port") or 28015, "--port", low=1, high=65535),
                db=args.get("--db") or "tqueues",
                user=args.get("--user") or "admin",
                password=args.get("--password") or "",
            )
        domains = tuple(
            d.strip() for d in (args.get("--allowed_domains") or "").split(",") if d.strip()
        )
        for domain in domains:
            if domain == "*" or not urlsplit(domain).scheme:
                raise SettingsError(
                    f"--allowed_domains takes origins such as https://foo.com, not {domain!r}"
                )
        synchronous = str(args.get("--sync") or "FULL").upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise SettingsError(f"--sync must be FULL or NORMAL, not {args.get('--sync')!r}")
        return cls(
            listen_host=host,
            listen_port=port,
            data_dir=args.get("--data") or "./tqueues-data",
            sqlite_synchronous=synchronous,
            rethinkdb=rethinkdb,
            allowed_domains=domains,
            loglevel=_loglevel(args.get("--loglevel")),
            max_wait=_float(args.get("--max_wait") or 300, "--max_wait", low=0, high=3600),
            reap_interval=_float(
                args.get("--reap_interval") or 0.5, "--reap_interval", low=0.01, high=60
            ),
            retry_base=_float(args.get("--retry_base") or 1.0, "--retry_base", low=0, high=3600),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything ``tqueues_worker`` can be told."""

    endpoint_url: str = DEFAULT_ENDPOINT
    queues: tuple[str, ...] = ()
    concurrency: int = 1
    wait: float = 30.0  #: seconds each long-poll take may wait.
    grace: float = 30.0  #: seconds running jobs get to finish on SIGTERM/SIGINT.
    allow: tuple[str, ...] = ()  #: module prefixes a job's method may come from.
    burst: bool = False  #: stop once the queues are empty.
    loglevel: str = "INFO"

    @classmethod
    def from_docopt(
        cls, args: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> WorkerSettings:
        """Build from ``tqueues_worker``'s parsed command line; raises SettingsError."""
        url = args.get("--endpoint_url") or environ.get("TQUEUES_URL") or DEFAULT_ENDPOINT
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"--endpoint_url must be an http(s) URL, not {url!r}")
        queues = tuple(args.get("--queue") or ())
        if not queues:
            raise SettingsError("give at least one --queue")
        allow = tuple(args.get("--allow") or ()) + tuple(
            p for p in environ.get("TQUEUES_ALLOW", "").split(",") if p.strip()
        )
        return cls(
            endpoint_url=url,
            queues=queues,
            concurrency=_int(args.get("--concurrency") or 1, "--concurrency", low=1, high=1000),
            wait=_float(args.get("--wait") or 30, "--wait", low=0, high=300),
            grace=_float(args.get("--grace") or 30, "--grace", low=0, high=86400),
            allow=tuple(p.strip() for p in allow),
            burst=bool(args.get("--burst")),
            loglevel=_loglevel(args.get("--loglevel")),
        )


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, one line per record."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
