"""The dispatcher: the documented HTTP API (:class:`Dispatcher`) and its application factory."""

from __future__ import annotations

from tqueues.dispatcher.app import create_app
from tqueues.dispatcher.views import Dispatcher

__all__ = ["Dispatcher", "create_app"]
