"""Settings of the dispatcher and the worker: parsed, converted and validated here only.

The command lines (:mod:`tqueues.cli`) hand their docopt dictionaries to ``from_docopt``;
everything else takes the dataclasses. A bad value raises :class:`SettingsError` with a
message that names the option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tqueues.errors import TqueuesError
from tqueues.limits import DEFAULT_HOST, DEFAULT_LISTEN, DEFAULT_MAX_WAIT, DEFAULT_PORT, DEFAULT_URL

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")  #: as :data:`tqueues.logs.LOG_FORMATS`
_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


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


def _log_format(value: Any) -> str:
    log_format = str(value or "text").lower()
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"--log_format must be text or json, not {value!r}")
    return log_format


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"--listen takes HOST:PORT, not {value!r}")
    return host.strip("[]"), _int(port, "the --listen port", low=0, high=65535)


DURABILITIES = ("hard", "soft")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_file(path: str, option: str) -> str:
    """The token in the file ``path`` (surrounding whitespace removed); SettingsError if
    it cannot be read or holds no token (an empty file must not mean "no token")."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise SettingsError(f"{option}: cannot read {path}: {reason}") from None
    if not token:
        raise SettingsError(f"{option}: {path} is empty; it must hold the token")
    return token


def _worker_token(args: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The worker's token: --token_file, --token, TQUEUES_WORKER_TOKEN or TQUEUES_TOKEN."""
    if args.get("--token_file"):
        return _token_file(args["--token_file"], "--token_file")
    return (
        args.get("--token")
        or environ.get("TQUEUES_WORKER_TOKEN")
        or environ.get("TQUEUES_TOKEN")
        or None
    )


def read_tokens(args: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The dispatcher's tokens (token -> role) from options, files and the environment.

    ``--token``/``--token_file``/``TQUEUES_TOKEN`` give the admin token;
    ``--producer_token``/``TQUEUES_PRODUCER_TOKEN``, ``--worker_token``/
    ``TQUEUES_WORKER_TOKEN`` and ``--monitor_token``/``TQUEUES_MONITOR_TOKEN`` the
    narrower ones (each also as a ``_file`` option).
    Raises SettingsError for tokens under 16 characters or one token given two roles.
    """
    tokens: dict[str, str] = {}
    for role, name in (("admin", "token"), ("producer", "producer_token"),
                       ("worker", "worker_token"), ("monitor", "monitor_token")):  # fmt: skip
        value = args.get(f"--{name}") or environ.get(f"TQUEUES_{name.upper()}")
        if args.get(f"--{name}_file"):
            value = _token_file(args[f"--{name}_file"], f"--{name}_file")
        if not value:
            continue
        if len(value) < 16:
            raise SettingsError(f"--{name} must be at least 16 characters long")
        if value in tokens:
            raise SettingsError(f"--{name} is the same as the {tokens[value]} token")
        tokens[value] = role
    return tokens


def parse_servers(value: str, option: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """A comma-separated list of ``HOST[:PORT]`` (``[::1]:28015`` for IPv6) as (host,
    port) pairs, in order, without repeats; an item without a port gets
    ``default_port``. Raises SettingsError naming ``option`` for an empty item, an IPv6
    address without brackets or a bad port."""
    servers: list[tuple[str, int]] = []
    for item in value.split(","):
        item = item.strip()
        host, port_text = item, ""
        if item.startswith("["):  # [IPv6] or [IPv6]:PORT
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                host = ""
            port_text = rest[1:]
        elif item.count(":") > 1:  # an IPv6 address takes brackets
            host = ""
        elif ":" in item:
            host, _, port_text = item.partition(":")
        if not host:
            raise SettingsError(
                f"{option} takes HOST[:PORT] items separated by commas, not {value!r}"
            )
        port = default_port
        if port_text:
            port = _int(port_text, f"the port of {item!r} in {option}", low=1, high=65535)
        if (host, port) not in servers:
            servers.append((host, port))
    return tuple(servers)


WRITE_ACKS = ("majority", "single")


@dataclasses.dataclass(frozen=True, slots=True)
class RethinkDBSettings:
    """Where the RethinkDB store connects, and how it writes.

    ``host:port`` is the first server tried; ``more_servers`` are the other servers of
    the same cluster, tried in turn when the one in use cannot be reached (see
    :attr:`servers`).
    """

    host: str = "localhost"
    port: int = 28015
    db: str = "tqueues"
    user: str = "admin"
    password: str = ""
    pool_size: int = 4  #: connections per process; queries are multiplexed over them.
    durability: str = "hard"  #: "hard": on disk before acknowledged; "soft": in memory.
    timeout: float = 10.0  #: seconds any one query (or connect) may take.
    #: further servers (host, port) of the cluster to fail over to, in order.
    more_servers: tuple[tuple[str, int], ...] = ()
    replicas: int = 1  #: replicas of each table this store creates.
    write_acks: str = "majority"  #: "majority" or "single", set on each table it creates.

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        """Every server to connect to, the first one first: ``(host, port)`` pairs."""
        return ((self.host, self.port), *self.more_servers)

    @property
    def address(self) -> str:
        """The servers as one would write them: ``host:port,host:port``."""
        return ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.servers
        )

    @classmethod
    def from_url(cls, url: str, *, default_port: int | None = None) -> RethinkDBSettings:
        """``rethinkdb://USER:PASSWORD@HOST[:PORT][,HOST[:PORT]...]/DB``; every part but
        the scheme is optional. Several hosts (comma-separated) are servers of one cluster
        to fail over between; a host without a port gets ``default_port`` (28015).

        Raises SettingsError for another scheme, a bad port or a bad database name.
        """
        parts = urlsplit(url)
        if parts.scheme != "rethinkdb":
            raise SettingsError(
                f"the RethinkDB URL must look like rethinkdb://user:password@host:28015/db, "
                f"not {url!r}"
            )
        default = cls()
        userinfo, at, hosts = parts.netloc.rpartition("@")
        username, colon, password = userinfo.partition(":")
        servers = (
            parse_servers(hosts, "the RethinkDB URL", default_port or default.port)
            if hosts
            else ((default.host, default_port or default.port),)
        )
        db = unquote(parts.path.strip("/")) or default.db
        if not _DB_NAME_RE.match(db):
            raise SettingsError(
                f"the RethinkDB database name must be letters, digits or underscores, not {db!r}"
            )
        return cls(
            host=servers[0][0],
            port=servers[0][1],
            more_servers=servers[1:],
            db=db,
            user=unquote(username) if at and username else default.user,
            password=unquote(password) if at and colon and password else default.password,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """Everything ``tqueues_dispatcher`` can be told."""

    listen_host: str = DEFAULT_HOST
    listen_port: int = DEFAULT_PORT
    data_dir: str = "./tqueues-data"  #: the embedded store's directory.
    sqlite_synchronous: str = "FULL"
    rethinkdb: RethinkDBSettings | None = None  #: set: use the RethinkDB store.
    allowed_domains: tuple[str, ...] = ()  #: CORS origins.
    loglevel: str = "INFO"
    log_format: str = "text"  #: text or json (:mod:`tqueues.logs`).
    access_log: bool = False  #: log every request (at INFO, logger ``tqueues.access``).
    max_wait: float = DEFAULT_MAX_WAIT  #: the longest long-poll, seconds.
    max_body: int = 1024 * 1024  #: the largest request body, bytes.
    header_timeout: float = 10.0  #: seconds a request's head (line and headers) may take.
    #: connections served at once (None: sized from the open-files limit at start).
    max_connections: int | None = None
    reap_interval: float = 0.5  #: seconds between lease/delay sweeps.
    history_keep: float = 7 * 86_400.0  #: seconds of per-minute throughput history kept.
    retry_base: float = 1.0  #: seconds before the first retry of a failed job.
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)  #: token -> role.
    insecure: bool = False  #: allow listening beyond loopback without tokens.
    #: bytes of changes a /ws client may leave unread before it is closed (also the most
    #: bytes of one page of its snapshot).
    ws_buffer: int = 8 * 1024 * 1024

    @classmethod
    def from_docopt(
        cls, args: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> DispatcherSettings:
        """Build from ``tqueues_dispatcher``'s parsed command line; raises SettingsError.

        The RethinkDB store is chosen by ``--rethinkdb URL`` (or ``TQUEUES_RETHINKDB`` in
        ``environ``) or by any of ``--host``, ``--port``, ``--db``, ``--user``,
        ``--password``; those options override the URL's parts.
        """
        host, port = parse_listen(args.get("--listen") or DEFAULT_LISTEN)
        tokens = read_tokens(args, environ)
        insecure = bool(args.get("--insecure"))
        if not tokens and not insecure and not is_loopback(host):
            raise SettingsError(
                f"refusing to listen on {host} without a token: anyone who can reach it could "
                "enqueue jobs that workers run; give --token (or TQUEUES_TOKEN), or pass "
                "--insecure if the network is trusted"
            )
        return cls(
            tokens=tokens,
            insecure=insecure,
            listen_host=host,
            listen_port=port,
            data_dir=args.get("--data") or "./tqueues-data",
            sqlite_synchronous=_synchronous(args.get("--sync")),
            rethinkdb=_rethinkdb_settings(args, environ),
            allowed_domains=_domains(args.get("--allowed_domains")),
            loglevel=_loglevel(args.get("--loglevel")),
            log_format=_log_format(args.get("--log_format")),
            access_log=bool(args.get("--access_log")),
            max_wait=_float(
                args.get("--max_wait") or DEFAULT_MAX_WAIT, "--max_wait", low=0, high=3600
            ),
            reap_interval=_float(
                args.get("--reap_interval") or 0.5, "--reap_interval", low=0.01, high=60
            ),
            retry_base=_float(args.get("--retry_base") or 1.0, "--retry_base", low=0, high=3600),
            history_keep=_float(
                args.get("--history_keep") or 7 * 86_400, "--history_keep", low=60, high=10**9
            ),
            max_body=_int(
                args.get("--max_body") or 1024 * 1024, "--max_body", low=1024, high=2**30
            ),
            header_timeout=_float(
                args.get("--header_timeout") or 10, "--header_timeout", low=0.1, high=3600
            ),
            max_connections=None
            if args.get("--max_connections") is None
            else _int(args["--max_connections"], "--max_connections", low=1, high=10**7),
            ws_buffer=_int(
                args.get("--ws_buffer") or 8 * 1024 * 1024, "--ws_buffer", low=65536, high=2**31
            ),
        )


def _synchronous(value: Any) -> str:
    synchronous = str(value or "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise SettingsError(f"--sync must be FULL or NORMAL, not {value!r}")
    return synchronous


def _domains(value: Any) -> tuple[str, ...]:
    domains = tuple(d.strip() for d in (value or "").split(",") if d.strip())
    for domain in domains:
        if domain == "*" or not urlsplit(domain).scheme:
            raise SettingsError(
                f"--allowed_domains takes origins such as https://foo.com, not {domain!r}"
            )
    return domains


def _rethinkdb_settings(
    args: Mapping[str, Any], environ: Mapping[str, str]
) -> RethinkDBSettings | None:
    """The RethinkDB settings the command line names, or None for the embedded store.

    ``--host`` (and the URL's host part) is a comma-separated list of ``HOST[:PORT]``, the
    servers of one cluster in the order they are tried; ``--port`` is the port of those
    given without one.
    """
    url = args.get("--rethinkdb") or environ.get("TQUEUES_RETHINKDB") or ""
    options = ("--host", "--port", "--db", "--user", "--password")
    if not url and not any(args.get(option) for option in options):
        return None
    port = None if not args.get("--port") else _int(args["--port"], "--port", low=1, high=65535)
    base = RethinkDBSettings.from_url(url, default_port=port) if url else RethinkDBSettings()
    servers = base.servers
    if args.get("--host"):
        servers = parse_servers(args["--host"], "--host", port or base.port)
    elif port is not None and not url:
        servers = ((base.host, port),)
    db = args.get("--db") or base.db
    if not _DB_NAME_RE.match(db):
        raise SettingsError(f"--db must be letters, digits or underscores, not {db!r}")
    durability = str(args.get("--durability") or base.durability).lower()
    if durability not in DURABILITIES:
        raise SettingsError(f"--durability must be hard or soft, not {args.get('--durability')!r}")
    write_acks = str(args.get("--write_acks") or base.write_acks).lower()
    if write_acks not in WRITE_ACKS:
        raise SettingsError(
            f"--write_acks must be majority or single, not {args.get('--write_acks')!r}"
        )
    return dataclasses.replace(
        base,
        host=servers[0][0],
        port=servers[0][1],
        more_servers=servers[1:],
        db=db,
        user=args.get("--user") or base.user,
        password=args.get("--password") or base.password,
        pool_size=_int(args.get("--pool_size") or base.pool_size, "--pool_size", low=1, high=64),
        durability=durability,
        replicas=_int(args.get("--replicas") or base.replicas, "--replicas", low=1, high=64),
        write_acks=write_acks,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything ``tqueues_worker`` can be told."""

    #: the dispatchers, in the order they are tried (see :class:`~tqueues.client.Client`).
    endpoint_urls: tuple[str, ...] = (DEFAULT_URL,)
    queues: tuple[str, ...] = ()
    concurrency: int = 1
    prefetch: int | None = None  #: jobs held beyond the running ones (None: 3 x concurrency).
    strict_order: bool = False  #: takes always start at the first queue (else in turn).
    wait: float = 30.0  #: seconds each long-poll take may wait.
    grace: float = 30.0  #: seconds running jobs get to finish on SIGTERM/SIGINT.
    heartbeat: float = 5.0  #: seconds between heartbeats to the worker registry.
    allow: tuple[str, ...] = ()  #: module prefixes a job's method may come from.
    burst: bool = False  #: stop once the queues are empty.
    token: str | None = None  #: bearer token for the dispatcher.
    timeout: float | None = None  #: seconds a run may take (None: no limit).
    loglevel: str = "INFO"
    log_format: str = "text"  #: text or json (:mod:`tqueues.logs`).

    @classmethod
    def from_docopt(
        cls, args: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> WorkerSettings:
        """Build from ``tqueues_worker``'s parsed command line; raises SettingsError.

        ``--endpoint_url`` may be repeated, and each (as ``TQUEUES_URL``) may be a
        comma-separated list: dispatchers of one cluster, to move between when one stops
        answering.
        """
        given = args.get("--endpoint_url") or environ.get("TQUEUES_URL") or DEFAULT_URL
        urls = parse_endpoints([given] if isinstance(given, str) else given, "--endpoint_url")
        queues = tuple(args.get("--queue") or ())
        if not queues:
            raise SettingsError("give at least one --queue")
        allow = tuple(args.get("--allow") or ()) + tuple(
            p for p in environ.get("TQUEUES_ALLOW", "").split(",") if p.strip()
        )
        settings = cls(
            endpoint_urls=urls,
            queues=queues,
            concurrency=_int(args.get("--concurrency") or 1, "--concurrency", low=1, high=1000),
            prefetch=None
            if args.get("--prefetch") is None
            else _int(args["--prefetch"], "--prefetch", low=0, high=1000),
            wait=_float(args.get("--wait") or 30, "--wait", low=0, high=DEFAULT_MAX_WAIT),
            grace=_float(args.get("--grace") or 30, "--grace", low=0, high=86400),
            heartbeat=_float(args.get("--heartbeat") or 5, "--heartbeat", low=0.1, high=300),
            allow=tuple(p.strip() for p in allow),
            burst=bool(args.get("--burst")),
            strict_order=bool(args.get("--strict_order")),
            token=_worker_token(args, environ),
            timeout=None
            if args.get("--timeout") is None
            else _float(args["--timeout"], "--timeout", low=0.001, high=7 * 86400),
            loglevel=_loglevel(args.get("--loglevel")),
            log_format=_log_format(args.get("--log_format")),
        )
        if not allow and not args.get("--allow_any"):
            raise SettingsError(
                "give --allow PREFIX (the modules whose functions jobs may run; repeatable) "
                "or --allow_any: a job names the function a worker imports and runs"
            )
        if allow and args.get("--allow_any"):
            raise SettingsError("--allow and --allow_any exclude each other")
        return settings


def parse_endpoints(values: Sequence[str], option: str) -> tuple[str, ...]:
    """The dispatcher URLs of ``values``, each a URL or a comma-separated list of them, in
    order and without repeats. Raises SettingsError naming ``option`` for one that is not
    an http(s) URL, or for none at all."""
    urls: list[str] = []
    for value in values:
        for url in (part.strip() for part in str(value).split(",")):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError(f"{option} must be an http(s) URL, not {url!r}")
            if url not in urls:
                urls.append(url)
    if not urls:
        raise SettingsError(f"{option} must be an http(s) URL")
    return tuple(urls)
