"""Typed application keys: what the dispatcher's aiohttp application holds."""

from __future__ import annotations

import weakref

from aiohttp import web

from tqueues.settings import DispatcherSettings
from tqueues.stores.base import Store

settings_key = web.AppKey("settings", DispatcherSettings)
store_key = web.AppKey("store", Store)
websockets_key = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
