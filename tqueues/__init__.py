"""TQueues (reThinkdb Queues): an HTTP job dispatcher with distributed asyncio workers."""

from __future__ import annotations

__version__ = "0.1.0"

from tqueues.client import BlockingClient, Client

__all__ = ["BlockingClient", "Client", "__version__"]
