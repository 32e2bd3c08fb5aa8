"""Resolve the references of the docstrings the way a reader means them.

The API reference documents objects under their public names (``tqueues.Client``, not
``tqueues.client.aio.Client``), and docstrings often name a neighbour by its short name
(``:class:`ValidationError```, ``:meth:`Client.take_stream```). Sphinx resolves neither,
and the build is nitpicky (every reference must resolve). This extension resolves, on
``missing-reference``:

* a short name, to what it names in the module of the docstring (``:class:`Job``` in
  :mod:`tqueues.lifecycle` is the :class:`tqueues.jobs.JobRecord` that module imports);
* a name under one of :data:`ALIASES`' prefixes, to the same object under its public name;
* else, to the one documented object whose full name ends with it (none or several: the
  reference stays broken and the build fails).
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from docutils.nodes import Element
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.domains.python import PythonDomain
from sphinx.environment import BuildEnvironment
from sphinx.util.nodes import make_refnode

#: Where a module defines what the package exports: the defining name -> the public one.
ALIASES = {
    "tqueues.client.aio.Client": "tqueues.Client",
    "tqueues.client.Client": "tqueues.Client",
    "tqueues.client.blocking.BlockingClient": "tqueues.BlockingClient",
    "tqueues.running.Job": "tqueues.worker.Job",
}


def public_name(target: str) -> str:
    """``target`` under its public name (itself if it has no other)."""
    for defining, public in ALIASES.items():
        if target == defining or target.startswith(defining + "."):
            return public + target[len(defining) :]
    return target


def as_imported(module: str | None, target: str) -> str | None:
    """The defining name of what ``target`` names in ``module``, or None."""
    head, _, rest = target.lstrip(".~").partition(".")
    try:
        found = getattr(importlib.import_module(module or ""), head)
        defined = f"{found.__module__}.{found.__qualname__}"
    except (ImportError, ValueError, AttributeError):
        return None
    return f"{defined}.{rest}" if rest else defined


def documented(domain: PythonDomain, target: str) -> str | None:
    """The full name of the one documented object ``target`` names, or None."""
    if target in domain.objects:
        return target
    suffix = "." + target.lstrip(".~")
    found = [name for name in domain.objects if name.endswith(suffix)]
    return found[0] if len(found) == 1 else None


def resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> nodes.reference | None:
    """The reference ``node`` makes, when one documented object answers it."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    assert isinstance(domain, PythonDomain)
    target = node["reftarget"]
    imported = as_imported(node.get("py:module"), target)
    name = (imported and documented(domain, public_name(imported))) or documented(
        domain, public_name(target)
    )
    if name is None:
        return None
    entry = domain.objects[name]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
