"""The documentation parses as reStructuredText without a warning (tables that fit their
columns, closed literals), as GitHub and docutils render it."""

from __future__ import annotations

import io
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.rst", *(ROOT / "docs").glob("*.rst")])


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_page_parses_cleanly(page: Path) -> None:
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        page.read_text(),
        source_path=str(page),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5},
    )
    assert warnings.getvalue() == "", warnings.getvalue()


def test_every_page_is_checked() -> None:
    assert len(PAGES) >= 10 and ROOT / "README.rst" in PAGES
