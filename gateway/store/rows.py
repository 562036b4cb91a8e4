"""The row codec of the SQL stores (SQLite and PostgreSQL): how a `Job` and an `Event`
become table rows and come back, in one place, so both stores keep exactly the same
columns and bytes.

JSON values (result, error, progress, event data) are orjson bytes, NULL for None: the
same in both stores, and unlike `jsonb` they keep key order, big floats and "\\u0000".
Columns are read by position in the order the queries below name them; `JobRow` names
the extra columns (`request`, `published`) so no caller counts to 15. The queries both
stores make alike (`listing_sql`, `timings_sql`) are built here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from gateway.jobs import Event, Job
from gateway.store.base import ANSWER_EVENTS, JobQuery
from gateway.types import JSON

Mark = Callable[[int], str]
"""The placeholder of the n-th parameter (from 1): `?` for SQLite, `$n` for PostgreSQL."""

# The job columns, in the order `job_to_row` writes and `job_from_row` reads them.
JOB_FIELDS = (
    "id",
    "op",
    "status",
    "seq",
    "created_at",
    "updated_at",
    "result",
    "error",
    "progress",
    "idempotency_key",
    "request_hash",
    "deadline_at",
    "owner",
    "traceparent",
    "tracestate",
)
JSON_FIELDS = frozenset({"result", "error", "progress"})
JOB_COLUMNS = ", ".join(JOB_FIELDS)
"""`SELECT {JOB_COLUMNS} FROM ...` gives what `job_from_row` takes."""
STORED_JOB_COLUMNS = f"{JOB_COLUMNS}, request, published"
"""`SELECT {STORED_JOB_COLUMNS} FROM ...` gives what `stored_job_from_row` takes."""
INSERT_JOB_COLUMNS = f"{JOB_COLUMNS}, request"
"""`INSERT INTO jobs ({INSERT_JOB_COLUMNS})` with the values of `insert_job_row`."""
INSERT_JOB_ARITY = len(JOB_FIELDS) + 1

EVENT_COLUMNS = "job_id, seq, type, data, time"
"""`INSERT INTO events ({EVENT_COLUMNS})` with the values of `event_to_row`."""

# A result event's data, read from its job (`j`) unless the row has it: rows written
# before results were stored once still carry a copy. The job's result is the first
# result event's data (the first terminal event wins), so both are the same value.
EVENT_DATA = "CASE WHEN e.data IS NULL AND e.type = 'result' THEN j.result ELSE e.data END"
SELECT_EVENT = f"e.job_id, e.seq, e.type, {EVENT_DATA}, e.time"
"""Selected from events `e` LEFT JOIN jobs `j`: what `event_from_row` takes."""


def dump(value: JSON) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def load(raw: bytes | bytearray | memoryview | None) -> JSON:
    return None if raw is None else orjson.loads(raw)


def job_from_row(row: Sequence[Any]) -> Job:
    """A job from a row of JOB_COLUMNS (extra columns after them are ignored)."""
    # Positional, in JOB_FIELDS order (checked below): twice as fast as by name, on the
    # hot path of every read and every recorded event.
    return Job(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        load(row[6]),
        load(row[7]),
        load(row[8]),
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
    )


def job_to_row(job: Job) -> tuple[Any, ...]:
    """A job as a row of JOB_COLUMNS."""
    return (
        job.id,
        job.op,
        job.status,
        job.seq,
        job.created_at,
        job.updated_at,
        dump(job.result),
        dump(job.error),
        dump(job.progress),
        job.idempotency_key,
        job.request_hash,
        job.deadline_at,
        job.owner,
        job.traceparent,
        job.tracestate,
    )


# The two functions above name the columns by position: they must be Job's, in order, and
# the JSON ones where they decode them.
if tuple(f.name for f in fields(Job)) != JOB_FIELDS or set(JOB_FIELDS[6:9]) != JSON_FIELDS:
    raise TypeError("JOB_FIELDS must name Job's fields in order, the JSON ones at 6 to 8")


def insert_job_row(job: Job, request: bytes) -> tuple[Any, ...]:
    """A new job's row of INSERT_JOB_COLUMNS."""
    return (*job_to_row(job), request)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job with what only the store keeps of it: its request, and whether it was
    published (what an idempotency key's repeat needs)."""

    job: Job
    request: bytes
    published: bool


def stored_job_from_row(row: Sequence[Any]) -> JobRow:
    """A row of STORED_JOB_COLUMNS."""
    n = len(JOB_FIELDS)
    return JobRow(job_from_row(row[:n]), bytes(row[n]), bool(row[n + 1]))


def job_state_row(job: Job) -> tuple[Any, ...]:
    """What `record` changes: status, seq, updated_at, result, error, progress."""
    return (
        job.status,
        job.seq,
        job.updated_at,
        dump(job.result),
        dump(job.error),
        dump(job.progress),
    )


def event_to_row(event: Event) -> tuple[Any, ...]:
    """An event as a row of EVENT_COLUMNS. The data of a result is NULL: the job row holds
    it already (a result of megabytes is stored once, not twice); see EVENT_DATA."""
    data = None if event.type == "result" else dump(event.data)
    return (event.job_id, event.seq, event.type, data, event.time)


def event_from_row(row: Sequence[Any]) -> Event:
    """An event from a row of SELECT_EVENT."""
    return Event(row[0], row[1], row[2], load(row[3]), row[4])


def listing_sql(
    query: JobQuery, jobs: str, mark: Mark, id_order: str = "id"
) -> tuple[str, list[Any]]:
    """`JobStore.list_jobs` as SQL over the table `jobs`, and its parameters: only fixed
    text goes into the statement, every value of the query is a parameter. `id_order` is
    how to order ids (PostgreSQL: bytewise, as Python does, whatever the database's
    collation)."""
    conditions: list[str] = []
    parameters: list[Any] = []

    def parameter(value: Any) -> str:
        parameters.append(value)
        return mark(len(parameters))

    if not query.everyone:
        conditions.append(f"owner = {parameter(query.owner)}")
    if query.op is not None:
        conditions.append(f"op = {parameter(query.op)}")
    if query.status is not None:
        conditions.append(f"status = {parameter(query.status)}")
    if query.before is not None:
        created_at, job_id = query.before
        # A row value: both stores can start an index scan at it.
        conditions.append(
            f"(created_at, {id_order}) < ({parameter(float(created_at))}, {parameter(job_id)})"
        )
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT {JOB_COLUMNS} FROM {jobs}{where} "
        f"ORDER BY created_at DESC, {id_order} DESC LIMIT {parameter(query.limit)}",
        parameters,
    )


def timings_sql(jobs: str, events: str, mark: Mark) -> str:
    """`JobStore.recent_timings` as SQL over the tables `jobs` and `events`; its
    parameters are op, since, limit. It walks the (op, updated_at) index; a job's first
    answer is found through the events' primary key, (job_id, seq)."""
    answers = ", ".join(f"'{t}'" for t in ANSWER_EVENTS)
    return (
        "SELECT j.status, j.created_at, "
        f"(SELECT min(e.time) FROM {events} e WHERE e.job_id = j.id AND e.type IN ({answers})), "
        f"j.updated_at FROM {jobs} j WHERE j.op = {mark(1)} AND j.updated_at >= {mark(2)} "
        f"ORDER BY j.updated_at DESC LIMIT {mark(3)}"
    )
