"""Sphinx configuration of the tqueues documentation: ``sphinx-build -W --keep-going docs
OUT`` builds the site (tests/unit/test_docs_build.py does, so the suite fails on any
warning). The API reference comes from the docstrings (autodoc), so the package must be
importable (``make install``); the OpenAPI document is written into the site by the
``openapi_document`` extension in ``_ext/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import tqueues  # noqa: E402 (after the path to _ext: conf.py is a script, not a module)

project = "tqueues"
author = "The tqueues authors"
copyright = "2026, The tqueues authors"
version = release = tqueues.__version__

extensions = [
    "sphinx.ext.autodoc",
    "openapi_document",
    "public_names",
]
exclude_patterns = ["_build"]
root_doc = "index"
# Every reference must resolve: a typo in a role is a broken link, and -W makes it fail.
# public_names (in _ext/) resolves docstrings' short and defining names. What stays out:
# the standard library's and other projects' names (intersphinx would fetch their
# inventories over the network, which the build must not need) and private helpers.
nitpicky = True
nitpick_ignore_regex = [
    # (_asyncio.Task: asyncio.Task as an attribute's annotation names it)
    ("py:.*", r"(abc|_?asyncio|collections|dataclasses|enum|importlib|random|types|typing)\..*"),
    ("py:.*", r"(aiohttp|yarl)\..*"),
    ("py:.*", r"(.*\.)?_\w+"),  # private names, as base classes show them
    # The dispatcher's modules: its API is HTTP (the OpenAPI document), not Python.
    ("py:.*", r"tqueues\.dispatcher\..*"),
    ("py:class", r"dict\[str"),  # a piece of a nested annotation Sphinx splits
]
nitpick_ignore = [
    ("py:class", "WaitLine"),  # the store's line of long-poll takers (stores/waiters.py)
]

# -- the API reference -------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"tqueues {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
