"""The dispatcher's OpenAPI document in the documentation: written into the HTML output as
``openapi.json`` (the document ``GET /openapi.json`` serves), and a table of its operations
on the page that holds the ``.. openapi-operations::`` directive.

Only the public :func:`tqueues.dispatcher.openapi.document` is used: the document is built
by the code, never copied into docs/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

METHODS = ("get", "put", "post", "patch", "delete")


def the_document() -> dict[str, Any]:
    """The OpenAPI document the dispatcher serves."""
    from tqueues.dispatcher.openapi import document

    return document()


class OpenAPIOperations(SphinxDirective):
    """A table of every operation of the document: method and path, operationId, summary."""

    def run(self) -> list[nodes.Node]:
        rows: list[tuple[str, str, str]] = []
        for path, item in the_document()["paths"].items():
            for method in METHODS:
                operation = item.get(method)
                if operation is not None:
                    rows.append(
                        (
                            f"{method.upper()} {path}",
                            operation.get("operationId", ""),
                            operation.get("summary", ""),
                        )
                    )
        table = nodes.table(classes=["openapi-operations"])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (3, 2, 5):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += _row(("Operation", "operationId", "Summary"))
        body = nodes.tbody()
        group += body
        for row in rows:
            body += _row(row, literal=2)
        return [table]


def _row(cells: tuple[str, str, str], *, literal: int = 0) -> nodes.row:
    """A table row of ``cells``; the first ``literal`` of them as code."""
    row = nodes.row()
    for n, text in enumerate(cells):
        entry = nodes.entry()
        inline: nodes.Node = nodes.literal(text=text) if n < literal else nodes.Text(text)
        entry += nodes.paragraph("", "", inline)
        row += entry
    return row


def write_document(app: Sphinx, exception: BaseException | None) -> None:
    """After an HTML build, write the document beside the pages as ``openapi.json``."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir) / "openapi.json"
        out.write_text(json.dumps(the_document(), indent=2, sort_keys=False) + "\n")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("openapi-operations", OpenAPIOperations)
    app.connect("build-finished", write_document)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
