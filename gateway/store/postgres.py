"""The shared job store: PostgreSQL, for any number of gateway instances.

Every method is one transaction on a pooled connection (asyncpg). `record` locks the job
row (SELECT ... FOR UPDATE) before it applies `gateway.jobs.apply`, so instances that
record events for the same job at once take turns: seqs never repeat or skip, and the
first terminal event wins. Idempotency keys are a unique index; a concurrent duplicate
create waits for the first one to commit, then finds its job.

JSON values (result, error, progress, event data) are stored as orjson bytes in `bytea`
columns, exactly as the SQLite store keeps them: `jsonb` would reorder object keys, turn
floats like 1e300 into 301-digit integers, and refuse "\\u0000" in strings. Times are
epoch seconds in `double precision`, as the `Job` and `Event` dataclasses have them.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from gateway.jobs import Event, Job, apply
from gateway.store.base import Created, JobQuery, JobStore, JobTiming, Overdue, Recorded
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

log = logging.getLogger("gateway.store.postgres")

SCHEMA_VERSION = 1
# Any constant of our own: it serialises schema creation among instances starting at once
# (concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's catalog unique indexes).
SCHEMA_LOCK = 0x67617465776179  # "gateway"

# Table names carry a prefix: the store may share a database with other applications.
# Indexes are made (and dropped) here without a new version: an existing database gets
# them when a gateway opens it, and gateways of the version before still use it.
# gateway_jobs_op_updated serves retention and per-operation figures (it was once
# gateway_jobs_finished, of finished jobs only); the *_recent ones serve listing, newest
# first, ids ordered bytewise ("C") as the other stores order them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_jobs (
    id text PRIMARY KEY,
    op text NOT NULL,
    status text NOT NULL,
    seq integer NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    result bytea,
    error bytea,
    progress bytea,
    idempotency_key text,
    request_hash text,
    request bytea NOT NULL,
    published boolean NOT NULL DEFAULT false,
    deadline_at double precision,
    lease_until double precision,
    owner text,
    traceparent text,
    tracestate text
);
-- Added since version 1 was set: nullable, so an older database only gains them.
ALTER TABLE gateway_jobs ADD COLUMN IF NOT EXISTS traceparent text;
ALTER TABLE gateway_jobs ADD COLUMN IF NOT EXISTS tracestate text;
CREATE UNIQUE INDEX IF NOT EXISTS gateway_jobs_idempotency
    ON gateway_jobs (op, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS gateway_jobs_deadline ON gateway_jobs (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS gateway_jobs_lease ON gateway_jobs (lease_until)
    WHERE lease_until IS NOT NULL AND status = 'running';
CREATE INDEX IF NOT EXISTS gateway_jobs_unconfirmed ON gateway_jobs (created_at)
    WHERE NOT published AND idempotency_key IS NOT NULL AND status = 'queued';
DROP INDEX IF EXISTS gateway_jobs_finished;
CREATE INDEX IF NOT EXISTS gateway_jobs_op_updated ON gateway_jobs (op, updated_at);
CREATE INDEX IF NOT EXISTS gateway_jobs_recent
    ON gateway_jobs (created_at, id COLLATE "C");
CREATE INDEX IF NOT EXISTS gateway_jobs_op_recent
    ON gateway_jobs (op, created_at, id COLLATE "C");
CREATE INDEX IF NOT EXISTS gateway_jobs_owner_recent
    ON gateway_jobs (owner, created_at, id COLLATE "C");
CREATE TABLE IF NOT EXISTS gateway_meta (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_events (
    job_id text NOT NULL,
    seq integer NOT NULL,
    type text NOT NULL,
    data bytea,
    time double precision NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""

PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, INSERT_JOB_ARITY + 1))
BYTEWISE_ID = 'id COLLATE "C"'
SELECT_TIMINGS = timings_sql("gateway_jobs", "gateway_events", lambda n: f"${n}")

# Query parameters of the store URL that configure the pool; the rest go to asyncpg
# (which passes names it does not know on to the server as settings).
POOL_OPTIONS: dict[str, type[int] | type[float]] = {
    "min_size": int,
    "max_size": int,
    "command_timeout": float,
}
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
PING_TIMEOUT = 5.0


def _rowcount(status: str) -> int:
    """The row count of a command status such as "UPDATE 1"."""
    return int(status.rsplit(" ", 1)[-1])


def redact(url: str) -> str:
    """The URL with its password (in the user part or as `?password=`) replaced, fit
    for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        hidden = [(n, "***" if n == "password" else v) for n, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """`postgresql://user:pass@host:port/db?min_size=1&max_size=10` -> (the URL for
    asyncpg, the pool options taken out of its query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL store URL (postgresql://...): {redact(url)!r}")
    options: dict[str, Any] = {"min_size": DEFAULT_MIN_SIZE, "max_size": DEFAULT_MAX_SIZE}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in POOL_OPTIONS:
            try:
                options[name] = POOL_OPTIONS[name](value)
            except ValueError:
                raise ValueError(
                    f"store URL option {name}={value!r} is not a number: {redact(url)!r}"
                ) from None
        else:
            rest.append((name, value))
    if not 0 <= options["min_size"] <= options["max_size"] or options["max_size"] < 1:
        raise ValueError(
            f"store URL needs 0 <= min_size <= max_size, 1 <= max_size: {redact(url)!r}"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), options


class PostgresStore(JobStore):
    shared = True
    """Many gateway instances use one database: they tell each other about new events."""

    unavailable_errors = (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,  # the connection is gone, or the pool is closing
        asyncpg.InternalClientError,  # a connection the server dropped mid-operation
        asyncpg.PostgresConnectionError,
        asyncpg.OperatorInterventionError,  # shutting down, starting up, cancelled
        asyncpg.InsufficientResourcesError,  # too many connections, disk full
    )

    def __init__(self, url: str) -> None:
        self._dsn, self._pool_options = split_url(url)
        self.url = redact(url)
        """The URL without its password: the only form of it shown anywhere."""
        self._pool: Any = None  # asyncpg.Pool, once open
        self._identity: str | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        return cls(url)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(self._dsn, **self._pool_options)
        except (OSError, asyncpg.PostgresError) as exc:
            # Say where, never with the password; the cause says why.
            raise RuntimeError(f"cannot connect to the job store {self.url}: {exc}") from exc
        try:
            async with pool.acquire() as db:
                await self._migrate(db)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        log.info("job store: %s", self.url)

    async def _migrate(self, db: Any) -> None:
        """Create the tables if missing; refuse a database of another schema version."""
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await db.execute("CREATE TABLE IF NOT EXISTS gateway_schema (version integer NOT NULL)")
            version = await db.fetchval("SELECT max(version) FROM gateway_schema")
            has_jobs = await db.fetchval("SELECT to_regclass('gateway_jobs') IS NOT NULL")
            if (version is None and has_jobs) or (
                version is not None and version != SCHEMA_VERSION
            ):
                raise RuntimeError(
                    f"{self.url}: job store schema version {version}, this gateway needs "
                    f"{SCHEMA_VERSION}; use another database to start afresh"
                )
            await db.execute(SCHEMA)
            if version is None:
                await db.execute("INSERT INTO gateway_schema (version) VALUES ($1)", SCHEMA_VERSION)
            await db.execute(
                "INSERT INTO gateway_meta (name, value) VALUES ('identity', $1) "
                "ON CONFLICT (name) DO NOTHING",
                secrets.token_hex(8),
            )
            self._identity = await db.fetchval(
                "SELECT value FROM gateway_meta WHERE name = 'identity'"
            )

    @property
    def identity(self) -> str:
        assert self._identity is not None, "store is not open"
        return self._identity

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=PING_TIMEOUT) as db:
            await db.fetchval("SELECT 1", timeout=PING_TIMEOUT)

    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        async with self.pool.acquire() as db, db.transaction():
            # A repeat of a taken key inserts nothing (waiting, if the key's first job is
            # not committed yet, to see whether it will be) and then finds that job.
            inserted = await db.fetchval(
                f"INSERT INTO gateway_jobs ({INSERT_JOB_COLUMNS}) VALUES ({PLACEHOLDERS}) "
                "ON CONFLICT (op, idempotency_key) WHERE idempotency_key IS NOT NULL "
                "DO NOTHING RETURNING true",
                *insert_job_row(job, request),
            )
            if inserted:
                await self._insert_event(db, first)
                return Created(job, True, request, False)
            row = await db.fetchrow(
                f"SELECT {STORED_JOB_COLUMNS} FROM gateway_jobs "
                "WHERE op = $1 AND idempotency_key = $2",
                job.op,
                job.idempotency_key,
            )
        if row is None:
            # The key's job was deleted (discarded or purged) between the two statements:
            # the key is free again, so try afresh.
            return await self.create(job, first, request)
        stored = stored_job_from_row(row)
        return Created(stored.job, False, stored.request, stored.published)

    @staticmethod
    async def _insert_event(db: Any, event: Event) -> None:
        await db.execute(
            f"INSERT INTO gateway_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
            *event_to_row(event),
        )

    async def mark_published(self, job_id: str) -> None:
        await self.pool.execute("UPDATE gateway_jobs SET published = true WHERE id = $1", job_id)

    async def discard(self, job_id: str) -> None:
        async with self.pool.acquire() as db, db.transaction():
            # The job row first: that waits for a `record` holding it, whose event the
            # next statement then sees and deletes too.
            await db.execute("DELETE FROM gateway_jobs WHERE id = $1", job_id)
            await db.execute("DELETE FROM gateway_events WHERE job_id = $1", job_id)

    async def get(self, job_id: str) -> Job | None:
        row = await self.pool.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM gateway_jobs WHERE id = $1", job_id
        )
        return None if row is None else job_from_row(row)

    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        async with self.pool.acquire() as db, db.transaction():
            # FOR UPDATE: a concurrent `record` of this job (here or in another instance)
            # waits until this transaction commits, then reads the job as it left it.
            row = await db.fetchrow(
                f"SELECT {JOB_COLUMNS} FROM gateway_jobs WHERE id = $1 FOR UPDATE", job_id
            )
            if row is None:
                return None
            job = job_from_row(row)
            applied = apply(job, type, data)
            if applied is None:
                return Recorded(job, None)
            job, event = applied
            await self._insert_event(db, event)
            await db.execute(
                "UPDATE gateway_jobs SET status = $1, seq = $2, updated_at = $3, result = $4, "
                "error = $5, progress = $6, lease_until = coalesce($7, lease_until) "
                "WHERE id = $8",
                *job_state_row(job),
                lease_until,
                job.id,
            )
            return Recorded(job, event)

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self.pool.fetch(
            f"SELECT {SELECT_EVENT} FROM gateway_events e "
            "LEFT JOIN gateway_jobs j ON j.id = e.job_id "
            "WHERE e.job_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3",
            job_id,
            after,
            limit,
        )
        return [event_from_row(r) for r in rows]

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        sql, parameters = listing_sql(query, "gateway_jobs", lambda n: f"${n}", BYTEWISE_ID)
        return [job_from_row(r) for r in await self.pool.fetch(sql, *parameters)]

    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        rows = await self.pool.fetch(SELECT_TIMINGS, op, since, limit)
        return [JobTiming(r[0], r[1], r[2], r[3]) for r in rows]

    async def touch(self, job_id: str, lease_until: float) -> bool:
        status = await self.pool.execute(
            "UPDATE gateway_jobs SET lease_until = $1 WHERE id = $2 AND status = 'running'",
            lease_until,
            job_id,
        )
        return _rowcount(status) > 0

    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        rows = await self.pool.fetch(
            "SELECT id, 'deadline' FROM gateway_jobs WHERE deadline_at < $1 "
            "AND status IN ('queued', 'running') "
            "UNION ALL SELECT id, 'lease' FROM gateway_jobs WHERE lease_until < $1 "
            "AND status = 'running' "
            "UNION ALL SELECT id, 'unconfirmed' FROM gateway_jobs WHERE created_at < $2 "
            "AND NOT published AND idempotency_key IS NOT NULL AND status = 'queued' "
            "LIMIT $3",
            now,
            float("-inf") if unconfirmed_before is None else unconfirmed_before,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        async with self.pool.acquire() as db, db.transaction():
            # Lock the doomed rows first (so no event can be added to them meanwhile);
            # SKIP LOCKED lets instances purging at once share the work, not queue for it.
            ids = [
                r[0]
                for r in await db.fetch(
                    "SELECT id FROM gateway_jobs WHERE op = $1 AND updated_at < $2 "
                    "AND status IN ('succeeded', 'failed', 'cancelled', 'expired') "
                    "LIMIT $3 FOR UPDATE SKIP LOCKED",
                    op,
                    finished_before,
                    limit,
                )
            ]
            if ids:
                await db.execute("DELETE FROM gateway_events WHERE job_id = ANY($1)", ids)
                await db.execute("DELETE FROM gateway_jobs WHERE id = ANY($1)", ids)
            return len(ids)
