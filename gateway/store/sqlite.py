"""The embedded job store: one SQLite file (WAL mode), for one machine.

Writes go through a group-committing writer thread (see group_commit.py): each method is
one transaction, answered only once it is durably committed. Reads run on a second
connection in a thread of their own, so they never wait behind a commit. The event loop
never touches the disk.

One file may be shared by the processes of one `gateway serve --workers N` on one machine:
they take turns to write through a lock file beside it, `<file>-lock` (group_commit.py).
Every write transaction takes the write lock first (BEGIN IMMEDIATE): one that read first
could meet the SQLITE_BUSY that no busy timeout retries, when another process wrote in
between. The schema is made in one such transaction by whichever process opens a fresh
file first, so all see the same tables and read the same identity. Not across machines
(SQLite's locks do not hold over network file systems): that is what PostgreSQL is for.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.jobs import Event, Job, apply
from gateway.store.base import (
    Created,
    JobQuery,
    JobStore,
    JobTiming,
    Overdue,
    Recorded,
)
from gateway.store.group_commit import GroupCommitWriter, Reader, is_busy
from gateway.store.rows import (
    EVENT_COLUMNS,
    INSERT_JOB_ARITY,
    INSERT_JOB_COLUMNS,
    JOB_COLUMNS,
    SELECT_EVENT,
    STORED_JOB_COLUMNS,
    event_from_row,
    event_to_row,
    insert_job_row,
    job_from_row,
    job_state_row,
    listing_sql,
    stored_job_from_row,
    timings_sql,
)
from gateway.types import JSON, EventType

T = TypeVar("T")

SCHEMA_VERSION = 2
# Indexes are made (and dropped) here without a new version: an existing file gets them
# when a gateway opens it, and a gateway of the version before still reads and writes it.
# jobs_op_updated serves retention and per-operation figures (it was once jobs_finished,
# of finished jobs only); the *_recent ones serve listing, newest first.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result BLOB,
    error BLOB,
    progress BLOB,
    idempotency_key TEXT,
    request_hash TEXT,
    request BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    deadline_at REAL,
    lease_until REAL,
    owner TEXT,
    traceparent TEXT,
    tracestate TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (op, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until)
    WHERE lease_until IS NOT NULL AND status = 'running';
CREATE INDEX IF NOT EXISTS jobs_unconfirmed ON jobs (created_at)
    WHERE published = 0 AND idempotency_key IS NOT NULL AND status = 'queued';
DROP INDEX IF EXISTS jobs_finished;
CREATE INDEX IF NOT EXISTS jobs_op_updated ON jobs (op, updated_at);
CREATE INDEX IF NOT EXISTS jobs_recent ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_op_recent ON jobs (op, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_owner_recent ON jobs (owner, created_at, id);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data BLOB,
    time REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""
ADDED_COLUMNS = ("traceparent", "tracestate")
SCHEMA_STATEMENTS = [s.strip() for s in SCHEMA.split(";") if s.strip()]

BUSY_TIMEOUT = 5.0
"""Seconds a connection waits for a lock another process holds (SQLite's busy handler)."""

NEVER = float("-inf")  # a time no job was created before

# The hot statements, made once (sqlite3 caches a prepared statement by its text).
SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
SELECT_KEYED_JOB = f"SELECT {STORED_JOB_COLUMNS} FROM jobs WHERE op = ? AND idempotency_key = ?"
INSERT_JOB = f"INSERT INTO jobs ({INSERT_JOB_COLUMNS}) VALUES ({','.join('?' * INSERT_JOB_ARITY)})"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?)"
SELECT_TIMINGS = timings_sql("jobs", "events", lambda _: "?")


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode, where it stays for every process (a no-op after).

    The switch needs the file to itself, and SQLite answers "database is locked" at once
    instead of waiting while another process opening it holds a lock: so wait here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        if mode != "wal":
            raise RuntimeError(f"SQLite could not use WAL mode (it uses {mode!r})")
        return


def path_from_url(url: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a SQLite store URL (sqlite:///path): {url!r}")
    return Path(url[len(prefix) :])


class SQLiteStore(JobStore):
    cancel_safe = True  # see JobStore.cancel_safe
    unavailable_errors = (OSError, TimeoutError, sqlite3.OperationalError)
    """"database is locked", "disk I/O error", a full disk: the file, not our SQL."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._identity: str | None = None
        self._writer = GroupCommitWriter(
            self._connect_writer, lock_path=self.path.with_name(f"{self.path.name}-lock")
        )
        self._reader = Reader(self._connect_reader)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write transaction (committed when this returns)."""
        return await self._writer.write(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._reader.read(fn)

    def _connect_reader(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )
        try:
            _use_wal(db)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            # Checked and made in one write transaction: processes opening a fresh file at
            # once see either no tables or all of them at the right version, never a half.
            db.execute("BEGIN IMMEDIATE")
            try:
                self._identity = self._prepare_schema(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            db.close()
            raise
        return db

    def _prepare_schema(self, db: sqlite3.Connection) -> str:
        """Make the tables unless there, check their version; the store's identity."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'"
        ).fetchone()[0]
        if has_tables and version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: job store schema version {version}, this gateway needs "
                f"{SCHEMA_VERSION}; move the file away to start afresh"
            )
        for statement in SCHEMA_STATEMENTS:
            db.execute(statement)
        # Columns added since the version was set: nullable, so a file of the same version
        # made before them only gains them (a job made before has no trace).
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column in ADDED_COLUMNS:
            if column not in columns:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('identity', ?)",
            (secrets.token_hex(8),),
        )
        identity: str = db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()[0]
        return identity

    @property
    def identity(self) -> str:
        assert self._identity is not None, "store is not open"
        return self._identity

    async def open(self) -> None:
        def start() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer.start()  # first: it makes the tables
            self._reader.start()

        await asyncio.to_thread(start)

    async def close(self) -> None:
        def stop() -> None:
            self._reader.stop()
            self._writer.stop()

        await asyncio.to_thread(stop)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        def create(db: sqlite3.Connection) -> Created:
            if job.idempotency_key is not None:
                row = db.execute(
                    SELECT_KEYED_JOB,
                    (job.op, job.idempotency_key),
                ).fetchone()
                if row is not None:
                    stored = stored_job_from_row(row)
                    return Created(stored.job, False, stored.request, stored.published)
            db.execute(
                INSERT_JOB,
                insert_job_row(job, request),
            )
            self._insert_event(db, first)
            return Created(job, True, request, False)

        return await self._run(create)

    @staticmethod
    def _insert_event(db: sqlite3.Connection, event: Event) -> None:
        db.execute(INSERT_EVENT, event_to_row(event))

    async def mark_published(self, job_id: str) -> None:
        await self._run(
            lambda db: db.execute("UPDATE jobs SET published = 1 WHERE id = ?", (job_id,))
        )

    async def discard(self, job_id: str) -> None:
        def discard(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        await self._run(discard)

    async def get(self, job_id: str) -> Job | None:
        def get(db: sqlite3.Connection) -> Job | None:
            row = db.execute(SELECT_JOB, (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(get)

    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        def record(db: sqlite3.Connection) -> Recorded | None:
            row = db.execute(SELECT_JOB, (job_id,)).fetchone()
            if row is None:
                return None
            job = job_from_row(row)
            applied = apply(job, type, data)
            if applied is None:
                return Recorded(job, None)
            job, event = applied
            self._insert_event(db, event)
            db.execute(
                "UPDATE jobs SET status = ?, seq = ?, updated_at = ?, result = ?, error = ?, "
                "progress = ?, lease_until = coalesce(?, lease_until) WHERE id = ?",
                (*job_state_row(job), lease_until, job.id),
            )
            return Recorded(job, event)

        return await self._run(record)

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        def events(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                f"SELECT {SELECT_EVENT} FROM events e "
                "LEFT JOIN jobs j ON j.id = e.job_id "
                "WHERE e.job_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
            return [event_from_row(r) for r in rows]

        return await self._read(events)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        sql, parameters = listing_sql(query, "jobs", lambda _: "?")

        def list_jobs(db: sqlite3.Connection) -> list[Job]:
            return [job_from_row(r) for r in db.execute(sql, parameters)]

        return await self._read(list_jobs)

    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        def recent_timings(db: sqlite3.Connection) -> list[JobTiming]:
            rows = db.execute(SELECT_TIMINGS, (op, since, limit))
            return [JobTiming(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._read(recent_timings)

    async def touch(self, job_id: str, lease_until: float) -> bool:
        def touch(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running'",
                (lease_until, job_id),
            )
            return cursor.rowcount > 0

        return await self._run(touch)

    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        def overdue(db: sqlite3.Connection) -> list[tuple[str, Overdue]]:
            rows = db.execute(
                "SELECT id, 'deadline' FROM jobs WHERE deadline_at < ? "
                "AND status IN ('queued', 'running') "
                "UNION ALL SELECT id, 'lease' FROM jobs WHERE lease_until < ? "
                "AND status = 'running' "
                "UNION ALL SELECT id, 'unconfirmed' FROM jobs WHERE created_at < ? "
                "AND published = 0 AND idempotency_key IS NOT NULL AND status = 'queued' "
                "LIMIT ?",
                (now, now, NEVER if unconfirmed_before is None else unconfirmed_before, limit),
            ).fetchall()
            return [(r[0], r[1]) for r in rows]

        return await self._read(overdue)

    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        def purge(db: sqlite3.Connection) -> int:
            ids = [
                (r[0],)
                for r in db.execute(
                    "SELECT id FROM jobs WHERE op = ? AND updated_at < ? "
                    "AND status IN ('succeeded', 'failed', 'cancelled', 'expired') LIMIT ?",
                    (op, finished_before, limit),
                )
            ]
            db.executemany("DELETE FROM events WHERE job_id = ?", ids)
            db.executemany("DELETE FROM jobs WHERE id = ?", ids)
            return len(ids)

        return await self._run(purge)
