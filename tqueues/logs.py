"""Logging of the command lines: one line a record on stderr, as text or as JSON.

``--log_format text`` (the default) writes ``time LEVEL logger: message``. ``--log_format
json`` writes one JSON object a line (python-json-logger's formatter): ``time``,
``level``, ``logger`` and ``message``, then every field the call gave in ``extra=``, as
fields of their own: ``action`` always, and for a job ``job_id``, ``queue``, ``method``,
``event`` and its timings in seconds (``duration``). A record with an exception carries
its traceback as ``exc_info``. The names of the fields are in ``docs/observability.rst``.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The fields of every JSON line after ``time`` (ISO 8601, UTC) and before the record's
#: own (``extra=``) fields, and the names they are written under.
JSON_FIELDS = ("levelname", "name", "message")
JSON_NAMES = {"levelname": "level", "name": "logger"}


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (one of :data:`LOG_FORMATS`); ValueError otherwise."""
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    if log_format == "json":
        return JsonFormatter(
            list(JSON_FIELDS),
            rename_fields=JSON_NAMES,
            timestamp="time",
            json_ensure_ascii=False,
        )
    raise ValueError(f"the log format is one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` (DEBUG, INFO, WARNING or ERROR), one line a record in
    ``log_format``; replaces whatever handlers the root logger had. Raises ValueError for
    an unknown format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))


__all__ = ["LOG_FORMATS", "formatter", "setup_logging"]
