"""A docopt command line, with a one-line message for what it cannot parse.

docopt-ng says ``found unmatched (duplicate?) arguments [Option(None, '--max_body', 0,
True), Argument(None, '5')]`` for an unknown option: its internal objects, not which
option was wrong. :func:`parse_command_line` says ``unknown option --max_body (see
--help)`` instead, suggesting the nearest option.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import docopt

from tqueues import __version__


class UsageError(Exception):
    """The command line does not match the usage; ``str()`` is a one-line message."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage  #: the usage section of the command's docstring.


def parse_command_line(
    doc: str, argv: Sequence[str], *, version: str = __version__, commands: bool = False
) -> Any:
    """docopt's dictionary of ``argv`` parsed by ``doc``; prints the help or the version
    and exits 0 for ``--help`` and ``--version`` as docopt does.

    Raises :class:`UsageError` for an unknown option (one no known option starts with,
    since docopt accepts unique prefixes), an unexpected argument, an option given twice
    or without its value. With ``commands`` (a usage of sub-commands and their arguments,
    as ``tqueues``'s), arguments are not said to be unexpected: a command's usage that
    does not match is said so.
    """
    sections = docopt.parse_docstring_sections(doc)
    usage = (sections.usage_header + sections.usage_body).strip()
    options = docopt.parse_options(sections.before_usage) + docopt.parse_options(
        sections.after_usage
    )
    longs = sorted({o.longer for o in options if o.longer})
    shorts = {o.short for o in options if o.short}
    takes_value = {name for o in options if o.argcount for name in (o.longer, o.short) if name}
    positionals: list[str] = []
    seen: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--":
            positionals.extend(arguments)
            break
        if argument.startswith("--"):
            name = _long_option(argument.split("=", 1)[0], longs, usage)
            seen.append(name)
            if "=" not in argument and name in takes_value:
                next(arguments, None)
        elif argument.startswith("-") and len(argument) > 1:
            name = argument[:2]
            if name not in shorts:
                raise UsageError(f"unknown option {name} (see --help)", usage)
            seen.append(name)
            if name in takes_value and len(argument) == 2:
                next(arguments, None)
        else:
            positionals.append(argument)
    try:
        return docopt.docopt(doc, argv=list(argv), version=version)
    except docopt.DocoptExit as exc:
        said = str(exc).removesuffix(usage).strip().splitlines()
        first = said[0] if said else ""
        if first and not first.startswith("Warning: found unmatched"):
            raise UsageError(f"{first} (see --help)", usage) from None
        twice = sorted({name for name in seen if seen.count(name) > 1})
        if positionals and not commands:
            message = f"unexpected argument {positionals[0]!r}"
        elif twice:
            message = f"{twice[0]} is given more than once"
        else:
            message = "the arguments do not match the usage"
        raise UsageError(f"{message} (see --help)", usage) from None


def _long_option(name: str, longs: Sequence[str], usage: str) -> str:
    """The option ``name`` stands for: itself, or the one option it is a prefix of."""
    if name in longs:
        return name
    matches = [long for long in longs if long.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{name} could be {', '.join(matches)} (see --help)", usage)
    near = difflib.get_close_matches(name, longs, n=1, cutoff=0.75)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise UsageError(f"unknown option {name}{hint} (see --help)", usage)
