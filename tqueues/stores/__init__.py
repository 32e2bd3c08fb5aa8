"""The stores behind the one boundary (:class:`~tqueues.stores.base.Store`), and choosing one."""

from __future__ import annotations

from tqueues.retry import RetryPolicy
from tqueues.settings import DispatcherSettings, SettingsError
from tqueues.stores.base import Store


def open_store(settings: DispatcherSettings) -> Store:
    """The store ``settings`` name: RethinkDB when its options are given, else embedded SQLite.

    Not yet opened. Raises SettingsError for a store that cannot be built.
    """
    retry = RetryPolicy(base=settings.retry_base)
    if settings.rethinkdb is not None:
        try:
            from tqueues.stores.rethinkdb import RethinkDBStore
        except ImportError as exc:
            raise SettingsError(f"the RethinkDB store is not available: {exc}") from exc
        return RethinkDBStore(settings.rethinkdb, retry=retry)
    from tqueues.stores.sqlite import SQLiteStore

    return SQLiteStore(settings.data_dir, synchronous=settings.sqlite_synchronous, retry=retry)
