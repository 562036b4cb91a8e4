"""Job stores, chosen by URL."""

from __future__ import annotations

from gateway.store.base import Created, JobStore, Overdue, Recorded
from gateway.store.sqlite import SQLiteStore

__all__ = ["Created", "JobStore", "Overdue", "Recorded", "SQLiteStore", "open_store"]


def open_store(url: str) -> JobStore:
    """A store for `url` (not yet opened): `sqlite:///relative/path`, `sqlite:////abs/path`."""
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    raise ValueError(f"unsupported store URL {url!r}; use sqlite:///path")
