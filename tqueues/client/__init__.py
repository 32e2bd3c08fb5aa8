"""Python clients of the dispatcher's REST API: :class:`Client` (asyncio) and
:class:`BlockingClient` (its blocking twin). See docs/client.rst."""

from __future__ import annotations

from tqueues.client.aio import Client
from tqueues.client.answers import ERRORS, JSONDict, error_for
from tqueues.client.blocking import BlockingClient

__all__ = ["ERRORS", "BlockingClient", "Client", "JSONDict", "error_for"]
