"""Durable deployment state: the :class:`Store` port and its backends."""

from watchdog.errors import StoreError
from watchdog.store.base import Page, Store
from watchdog.store.sqlite import SqliteStore


def open_store(url: str) -> Store:
    """The backend for ``url`` (not yet opened: call ``await store.open()``)."""
    if url.startswith("sqlite://"):
        return SqliteStore(url)
    raise StoreError(f"store {url!r}: only sqlite:// is available in this version (postgresql:// is planned)")


__all__ = ["Page", "SqliteStore", "Store", "open_store"]
