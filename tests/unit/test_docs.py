"""The README parses as reStructuredText without a warning (tables that fit their columns,
closed literals, no Sphinx roles), as GitHub and PyPI render it with plain docutils; the
pages of docs/ are Sphinx's (their roles and directives are not docutils'), and
test_docs_build.py builds them with warnings as errors. And the documentation names exactly
the options the commands have: each command's every option is in its section of
docs/commands.rst and nothing more, and every option any page names exists."""

from __future__ import annotations

import io
import re
from pathlib import Path

import docopt
import docutils.core
import pytest

from tqueues.cli import admin as admin_cli
from tqueues.cli import dispatcher as dispatcher_cli
from tqueues.cli import worker as worker_cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.rst", *(ROOT / "docs").glob("*.rst")])


def test_the_readme_parses_cleanly() -> None:
    page = ROOT / "README.rst"
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        page.read_text(),
        source_path=str(page),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5},
    )
    assert warnings.getvalue() == "", warnings.getvalue()


def test_every_page_is_checked() -> None:
    assert len(PAGES) >= 10 and ROOT / "README.rst" in PAGES


# -- the options of the commands and the documentation agree ---------------------------------

COMMANDS = {
    "tqueues_dispatcher": dispatcher_cli.__doc__ or "",
    "tqueues_worker": worker_cli.__doc__ or "",
    "tqueues": admin_cli.__doc__ or "",
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
#: Options of other programs the documentation shows, and the program each belongs to
#: (named on the same line).
FOREIGN = {
    "--bind": "rethinkdb",
    "--join": "rethinkdb",
    "--directory": "rethinkdb",
    "--worker-class": "rq",
    "--pool": "celery",
    "--processes": "dramatiq",
    "--threads": "dramatiq",
    "--native": "py-spy",
    "--entrypoint": "docker",
    "--no-healthcheck": "docker",
    "--keep-going": "sphinx-build",
}


def command_options(doc: str) -> set[str]:
    """The long options a docopt docstring defines: its Options section and its usage."""
    sections = docopt.parse_docstring_sections(doc)
    options = docopt.parse_options(sections.before_usage) + docopt.parse_options(
        sections.after_usage
    )
    return {o.longer for o in options if o.longer} | set(OPTION.findall(sections.usage_body))


def benchmark_options() -> set[str]:
    """The options of the benchmark scripts and the examples (argparse), which
    docs/benchmarks.rst and docs/dashboard.rst (the demo's) show."""
    found: set[str] = set()
    for script in [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]:
        found |= set(re.findall(r'add_argument\(\s*"(--[a-z0-9_-]+)"', script.read_text()))
    return found


def commands_page_sections() -> dict[str, str]:
    """docs/commands.rst's text of each command's section."""
    parts = re.split(
        r"^``(tqueues\w*)``\n-+\n", (ROOT / "docs/commands.rst").read_text(), flags=re.M
    )
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_commands_page_has_a_section_per_command() -> None:
    assert sorted(commands_page_sections()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_a_command_is_in_its_section_and_no_other(command: str) -> None:
    defined = command_options(COMMANDS[command]) - {"--version"}
    documented = set(OPTION.findall(commands_page_sections()[command]))
    missing = sorted(defined - documented)
    assert not missing, f"{command}'s options missing from docs/commands.rst: {missing}"
    extra = sorted(documented - defined - {"--version"})
    assert not extra, f"docs/commands.rst names options {command} does not have: {extra}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_option_the_documentation_names_exists(page: Path) -> None:
    known = set().union(*(command_options(doc) for doc in COMMANDS.values()))
    known |= benchmark_options()
    unknown = []
    for line in page.read_text().splitlines():
        for option in OPTION.findall(line):
            program = FOREIGN.get(option)
            if option in known or (program is not None and program in line.lower()):
                continue
            unknown.append(f"{option}: {line.strip()}")
    assert not unknown, "\n".join(unknown)
