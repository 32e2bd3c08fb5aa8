"""Command lines: docopt parsing into settings, with clear errors for bad values."""

from __future__ import annotations

from typing import Any

import pytest
from docopt import docopt

from tqueues.cli import dispatcher as dispatcher_cli
from tqueues.cli import worker as worker_cli
from tqueues.settings import DispatcherSettings, SettingsError, WorkerSettings


def dispatcher_args(*argv: str) -> dict[str, Any]:
    return dict(docopt(dispatcher_cli.__doc__, argv=list(argv)))


def worker_args(*argv: str) -> dict[str, Any]:
    return dict(docopt(worker_cli.__doc__, argv=list(argv)))


def test_dispatcher_defaults_are_safe() -> None:
    settings = DispatcherSettings.from_docopt(dispatcher_args())
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8080)
    assert settings.rethinkdb is None and settings.data_dir == "./tqueues-data"


def test_documented_rethinkdb_options_select_rethinkdb() -> None:
    argv = ["--host", "db1", "--db", "foo", "--port", "28016", "--user", "u", "--password", "p"]
    argv += ["--loglevel", "DEBUG", "--allowed_domains", "https://foo.com,https://bar.com"]
    settings = DispatcherSettings.from_docopt(dispatcher_args(*argv))
    assert settings.rethinkdb is not None
    assert (settings.rethinkdb.host, settings.rethinkdb.port, settings.rethinkdb.db) == (
        "db1", 28016, "foo",
    )  # fmt: skip
    assert settings.allowed_domains == ("https://foo.com", "https://bar.com")
    assert settings.loglevel == "DEBUG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nonsense"], "--listen"),
        (["--listen", "127.0.0.1:99999"], "port"),
        (["--port", "abc"], "--port"),
        (["--loglevel", "LOUD"], "--loglevel"),
        (["--allowed_domains", "*"], "--allowed_domains"),
        (["--max_wait", "-1"], "--max_wait"),
        (["--sync", "OFF"], "--sync"),
    ],
)
def test_dispatcher_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DispatcherSettings.from_docopt(dispatcher_args(*argv))


def test_worker_options() -> None:
    args = worker_args("--queue", "a", "--queue", "b", "--concurrency", "4", "--allow", "app")
    settings = WorkerSettings.from_docopt(args, environ={"TQUEUES_ALLOW": "lib.jobs"})
    assert settings.queues == ("a", "b") and settings.concurrency == 4
    assert settings.allow == ("app", "lib.jobs")
    assert settings.endpoint_urls == ("http://127.0.0.1:8080/",)
    assert not settings.strict_order
    strict = WorkerSettings.from_docopt(
        worker_args("--queue", "a", "--allow_any", "--strict_order")
    )
    assert strict.strict_order


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queue", "a", "--allow_any", "--endpoint_url", "ftp://x"], "--endpoint_url"),
        (["--queue", "a", "--allow_any", "--concurrency", "0"], "--concurrency"),
        (["--queue", "a", "--allow_any", "--wait", "soon"], "--wait"),
        (["--queue", "a"], "--allow"),
        (["--queue", "a", "--allow", "x", "--allow_any"], "exclude"),
    ],
)
def test_worker_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        WorkerSettings.from_docopt(worker_args(*argv), environ={})


def test_bad_option_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as exit_info:
        dispatcher_cli.main(["--no-such-option"])
    assert "Usage:" in str(exit_info.value.code)


def test_worker_allow_any_is_an_explicit_choice() -> None:
    settings = WorkerSettings.from_docopt(worker_args("--queue", "a", "--allow_any"), environ={})
    assert settings.allow == ()
    from_env = WorkerSettings.from_docopt(worker_args("--queue", "a"), {"TQUEUES_ALLOW": "x,y"})
    assert from_env.allow == ("x", "y")


# -- several RethinkDB servers, replicas, several dispatchers (issue #22) ----------------------


def test_several_rethinkdb_servers_in_host_or_url() -> None:
    hosts = DispatcherSettings.from_docopt(
        dispatcher_args("--host", "db1, db2:28016,[::1]:28017,db1", "--port", "29015")
    ).rethinkdb
    assert hosts is not None
    assert hosts.servers == (("db1", 29015), ("db2", 28016), ("::1", 28017))
    assert hosts.address == "db1:29015,db2:28016,[::1]:28017"
    url = "rethinkdb://bob:s%40cret@db1,db2:28016/jobs"
    from_url = DispatcherSettings.from_docopt(dispatcher_args(), {"TQUEUES_RETHINKDB": url})
    assert from_url.rethinkdb is not None
    assert from_url.rethinkdb.servers == (("db1", 28015), ("db2", 28016))
    assert (from_url.rethinkdb.user, from_url.rethinkdb.password) == ("bob", "s@cret")
    assert from_url.rethinkdb.db == "jobs"
    # --host replaces the URL's servers; --port fills in the ports the URL leaves out.
    both = DispatcherSettings.from_docopt(
        dispatcher_args("--rethinkdb", url, "--host", "other"), environ={}
    ).rethinkdb
    assert both is not None and both.servers == (("other", 28015),) and both.db == "jobs"
    port = DispatcherSettings.from_docopt(
        dispatcher_args("--rethinkdb", url, "--port", "1"), environ={}
    ).rethinkdb
    assert port is not None and port.servers == (("db1", 1), ("db2", 28016))


def test_replicas_and_write_acks() -> None:
    default = DispatcherSettings.from_docopt(dispatcher_args("--host", "db")).rethinkdb
    assert default is not None and (default.replicas, default.write_acks) == (1, "majority")
    given = DispatcherSettings.from_docopt(
        dispatcher_args("--host", "db", "--replicas", "3", "--write_acks", "SINGLE")
    ).rethinkdb
    assert given is not None and (given.replicas, given.write_acks) == (3, "single")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "db1,,db2"], "--host takes HOST\\[:PORT\\] items"),
        (["--host", "db1:x"], "port of 'db1:x' in --host"),
        (["--host", "db1:70000"], "port of 'db1:70000' in --host"),
        (["--host", "[::1"], "--host takes"),
        (["--rethinkdb", "rethinkdb://a:1,b:2:3/db"], "the RethinkDB URL"),
        (["--host", "db", "--replicas", "0"], "--replicas must be between 1 and 64"),
        (["--host", "db", "--write_acks", "all"], "--write_acks must be majority or single"),
    ],
)
def test_bad_rethinkdb_servers_and_replicas(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        DispatcherSettings.from_docopt(dispatcher_args(*argv), environ={})
    assert "\n" not in caught.value.message


def test_several_dispatchers_for_a_worker() -> None:
    args = worker_args(
        "--queue", "a", "--allow_any",
        "--endpoint_url", "http://d1:8080/", "--endpoint_url", "http://d2:8080/,http://d3/",
    )  # fmt: skip
    settings = WorkerSettings.from_docopt(args, environ={})
    assert settings.endpoint_urls == ("http://d1:8080/", "http://d2:8080/", "http://d3/")
    env = WorkerSettings.from_docopt(
        worker_args("--queue", "a", "--allow_any"), {"TQUEUES_URL": "http://x/,http://y/"}
    )
    assert env.endpoint_urls == ("http://x/", "http://y/")
    with pytest.raises(SettingsError, match="--endpoint_url must be an http"):
        WorkerSettings.from_docopt(
            worker_args("--queue", "a", "--allow_any", "--endpoint_url", "http://x/,ftp://y"),
            environ={},
        )


def test_log_format_access_log_and_monitor_token() -> None:
    monitor = "m" * 20
    settings = DispatcherSettings.from_docopt(
        dispatcher_args("--log_format", "JSON", "--access_log", "--monitor_token", monitor)
    )
    assert (settings.log_format, settings.access_log) == ("json", True)
    assert settings.tokens == {monitor: "monitor"}
    defaults = DispatcherSettings.from_docopt(dispatcher_args())
    assert (defaults.log_format, defaults.access_log) == ("text", False)
    worker = WorkerSettings.from_docopt(
        worker_args("--queue", "q", "--allow_any", "--log_format", "json")
    )
    assert worker.log_format == "json"
    with pytest.raises(SettingsError, match="--log_format must be text or json, not 'xml'"):
        WorkerSettings.from_docopt(
            worker_args("--queue", "q", "--allow_any", "--log_format", "xml")
        )
    with pytest.raises(SettingsError, match="--monitor_token must be at least 16"):
        DispatcherSettings.from_docopt(dispatcher_args("--monitor_token", "short"))
