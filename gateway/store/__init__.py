"""Job stores, chosen by URL."""

from __future__ import annotations

from gateway.store.base import Created, JobQuery, JobStore, JobTiming, Overdue, Recorded
from gateway.store.sqlite import SQLiteStore

__all__ = [
    "Created",
    "JobQuery",
    "JobStore",
    "JobTiming",
    "Overdue",
    "Recorded",
    "SQLiteStore",
    "open_store",
]


def open_store(url: str) -> JobStore:
    """A store for `url` (not yet opened): `sqlite:///relative/path`, `sqlite:////abs/path`,
    or `postgresql://user:password@host:port/database` (also `postgres://`; pool sizes as
    `?min_size=1&max_size=10`)."""
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here so asyncpg is needed only by those who use PostgreSQL.
        from gateway.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    scheme = url.split("://", 1)[0] if "://" in url else url[:20]
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}; use sqlite:///path or postgresql://..."
    )
