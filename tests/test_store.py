"""The job stores, SQLite, PostgreSQL and memory, held to one suite: numbered events, the
first terminal event wins (also under concurrency), idempotency keys, leases and deadlines,
retention; what only the SQL stores do (bytes on disk, reopening); then PostgreSQL shared
by two store instances, and a gateway running on it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from gateway.jobs import new_job
from gateway.store import JobStore, SQLiteStore, open_store
from gateway.store.memory import MemoryStore
from gateway.store.postgres import PostgresStore, redact, split_url
from gateway.store.sqlite import path_from_url
from tests.postgres_support import fresh_database
from tests.support import make_settings, serve_gateway
from tests.test_round_trip import adder


async def empty_store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty SQL store (PostgreSQL: a database of its own)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return await fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store of each SQL kind."""
    return await empty_store_url(request.param, request, tmp_path)


async def opened(url: str) -> JobStore:
    store = open_store(url)
    await store.open()
    return store


@pytest.fixture
async def sql_store(store_url: str) -> AsyncIterator[JobStore]:
    """An open SQL store, at `store_url` (for tests that look at its tables too)."""
    store = await opened(store_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """An open, empty store of every kind: what the interface promises, each one keeps."""
    store = (
        MemoryStore()
        if request.param == "memory"
        else open_store(await empty_store_url(request.param, request, tmp_path))
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def test_urls_choose_the_store() -> None:
    assert isinstance(open_store("sqlite:///x.sqlite3"), SQLiteStore)
    for scheme in ("postgresql", "postgres"):
        assert isinstance(open_store(f"{scheme}://u:p@localhost/db"), PostgresStore)
    with pytest.raises(ValueError) as refused:
        open_store("mysql://user:secret@host/db")
    assert "secret" not in str(refused.value)


def test_postgres_url_options_and_password() -> None:
    url = "postgresql://gw:s3cret@db.example:6543/jobs?min_size=2&max_size=20&sslmode=disable"
    dsn, options = split_url(url)
    assert dsn == "postgresql://gw:s3cret@db.example:6543/jobs?sslmode=disable"
    assert options == {"min_size": 2, "max_size": 20}
    assert split_url("postgres://localhost/db")[1] == {"min_size": 1, "max_size": 10}
    assert (
        redact(url)
        == "postgresql://gw:***@db.example:6543/jobs?min_size=2&max_size=20&sslmode=disable"
    )
    assert "s3cret" not in repr(PostgresStore(url))
    assert redact("postgresql://gw@host/db?password=s3cret&x=1") == (
        "postgresql://gw@host/db?password=***&x=1"
    )
    for bad in ("max_size=0", "min_size=5&max_size=2", "max_size=lots"):
        with pytest.raises(ValueError) as refused:
            split_url(f"postgresql://gw:s3cret@host/db?{bad}")
        assert "s3cret" not in str(refused.value)


async def test_events_are_numbered_and_the_first_terminal_wins(store: JobStore) -> None:
    job, first = new_job("op")
    assert (await store.create(job, first, b"{}")).created
    await store.record(job.id, "started", None)
    await store.record(job.id, "progress", {"p": 1})
    done = await store.record(job.id, "result", {"r": 1})
    late = await store.record(job.id, "error", {"code": "x", "message": "y"})
    again = await store.record(job.id, "result", {"r": 2})
    assert done is not None and done.event is not None and done.event.seq == 4
    assert late is not None and late.event is None
    assert again is not None and again.event is None
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.seq, stored.result) == ("succeeded", 4, {"r": 1})
    assert stored.progress == {"p": 1}
    events = await store.events(job.id)
    assert [(e.seq, e.type) for e in events] == [
        (1, "queued"),
        (2, "started"),
        (3, "progress"),
        (4, "result"),
    ]
    assert [e.seq for e in await store.events(job.id, after=2)] == [3, 4]
    assert [e.seq for e in await store.events(job.id, after=1, limit=2)] == [2, 3]
    assert await store.record("missing", "result", {}) is None


async def test_json_values_come_back_as_they_went_in(store: JobStore) -> None:
    # Key order, big and small floats, NUL characters: all kept, on every store.
    value = {"z": 1, "a": [1.5, 1e300, -0.0, 2**62], "s": "nul \u0000 é", "n": None}
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.record(job.id, "progress", value)
    recorded = await store.record(job.id, "result", value)
    assert recorded is not None and recorded.event is not None
    stored = await store.get(job.id)
    assert stored is not None and stored.result == value and stored.progress == value
    assert list(stored.result) == ["z", "a", "s", "n"]  # type: ignore[arg-type]
    assert [e.data for e in await store.events(job.id, after=1)] == [value, value]


async def query(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """`sql` straight on a store's tables, named `{jobs}` and `{events}`, with `?`
    placeholders: what the store holds on disk, not what it reads back."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(path_from_url(url), isolation_level=None)) as db:
            return db.execute(sql.format(jobs="jobs", events="events"), args).fetchall()
    numbers = itertools.count(1)
    sql = sql.format(jobs="gateway_jobs", events="gateway_events")
    sql = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
    db = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await db.fetch(sql, *args)]
    finally:
        await db.close()


async def stored_bytes(url: str) -> int:
    """The space a store's tables take: SQLite's pages (those still in the WAL too),
    PostgreSQL's tables with their TOAST and indexes."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(path_from_url(url))) as db:
            pages: int = db.execute("PRAGMA page_count").fetchone()[0]
            return pages * db.execute("PRAGMA page_size").fetchone()[0]
    db = await asyncpg.connect(url)
    try:
        size: int = await db.fetchval(
            "SELECT pg_total_relation_size('gateway_jobs') "
            "+ pg_total_relation_size('gateway_events')"
        )
        return size
    finally:
        await db.close()


async def test_a_result_is_stored_once(store_url: str, sql_store: JobStore) -> None:
    """A 2 MiB result grows the store by about 2 MiB, not twice that: the job row holds
    it and its `result` event reads it from there (issue 11, point 6)."""
    store = sql_store
    result = {"blob": secrets.token_hex(1 << 20)}  # random: no compression hides a copy
    size = len(orjson.dumps(result))
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.record(job.id, "progress", {"done": 1})
    before = await stored_bytes(store_url)
    recorded = await store.record(job.id, "result", result)
    grown = await stored_bytes(store_url) - before
    print(f"\n[result stored once] a {size}-byte result grew the store by {grown} bytes")
    assert recorded is not None and recorded.event is not None
    assert size / 2 < grown < size * 1.5
    rows = await query(
        store_url, "SELECT type, data IS NULL FROM {events} WHERE job_id = ? ORDER BY seq", job.id
    )
    assert rows == [("queued", True), ("progress", False), ("result", True)]
    # Read back, every event is as it was recorded.
    events = await store.events(job.id)
    assert [(e.type, e.data) for e in events] == [
        ("queued", None),
        ("progress", {"done": 1}),
        ("result", result),
    ]
    assert events[-1] == recorded.event
    assert await store.events(job.id, after=2) == [recorded.event]
    stored = await store.get(job.id)
    assert stored is not None and stored.result == result


async def test_result_events_stored_with_their_data_read_as_before(
    store_url: str, sql_store: JobStore
) -> None:
    """Result events written by older gateways carry the data themselves: still read."""
    store = sql_store
    for value in ({"r": 1}, [1, "two"], "text"):
        job, first = new_job("op")
        await store.create(job, first, b"{}")
        recorded = await store.record(job.id, "result", value)
        assert recorded is not None and recorded.event is not None
        await query(
            store_url,
            "UPDATE {events} SET data = ? WHERE job_id = ? AND type = 'result'",
            orjson.dumps(value),
            job.id,
        )
        events = await store.events(job.id)
        assert [(e.type, e.data) for e in events] == [("queued", None), ("result", value)]
        assert events[-1] == recorded.event


async def test_the_memory_store_keeps_a_result_once() -> None:
    """Light jobs: the result event and the job share one value, not two copies."""
    store = MemoryStore()
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.record(job.id, "result", {"blob": "x" * 1000})
    stored, events = await store.get(job.id), await store.events(job.id)
    assert stored is not None and events[-1].data is stored.result


async def test_idempotency_key_is_unique_per_operation(store: JobStore) -> None:
    a, a1 = new_job("op", idempotency_key="k", request_hash="h")
    b, b1 = new_job("op", idempotency_key="k", request_hash="h")
    c, c1 = new_job("other", idempotency_key="k", request_hash="h")
    assert (await store.create(a, a1, b"1")).created
    repeat = await store.create(b, b1, b"2")
    assert not repeat.created and repeat.job.id == a.id and repeat.request == b"1"
    assert not repeat.published
    await store.mark_published(a.id)
    assert (await store.create(b, b1, b"2")).published
    assert (await store.create(c, c1, b"3")).created


async def test_concurrent_creates_with_one_key_make_one_job(store: JobStore) -> None:
    attempts = [new_job("op", idempotency_key="same", request_hash="h") for _ in range(20)]
    outcomes = await asyncio.gather(*(store.create(job, first, b"{}") for job, first in attempts))
    assert sum(o.created for o in outcomes) == 1
    assert len({o.job.id for o in outcomes}) == 1
    [winner] = [o.job for o in outcomes if o.created]
    assert [e.seq for e in await store.events(winner.id)] == [1]
    for job, _ in attempts:
        if job.id != winner.id:
            assert await store.get(job.id) is None


async def test_jobs_survive_reopening(store_url: str) -> None:
    store = await opened(store_url)
    job, first = new_job("op", deadline_seconds=30, owner="alice")
    await store.create(job, first, b"{}")
    await store.mark_published(job.id)
    await store.close()
    store = await opened(store_url)
    try:
        assert (await store.get(job.id)) == job
    finally:
        await store.close()


async def test_discard_forgets_everything(store: JobStore) -> None:
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.discard(job.id)
    assert await store.get(job.id) is None
    assert await store.events(job.id) == []


async def test_the_first_terminal_event_wins_under_concurrency(store: JobStore) -> None:
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.record(job.id, "started", None)
    answers = []
    for n in range(20):
        answers.append(store.record(job.id, "progress", {"n": n}))
        if n % 2:
            answers.append(store.record(job.id, "result", {"n": n}))
        else:
            answers.append(store.record(job.id, "error", {"code": "x", "message": str(n)}))
    outcomes = await asyncio.gather(*answers)
    terminal = [
        o.event
        for o in outcomes
        if o is not None and o.event is not None and o.event.type in ("result", "error")
    ]
    assert len(terminal) == 1
    events = await store.events(job.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e for e in events if e.type in ("result", "error")] == terminal
    assert events[-1] == terminal[0]  # nothing after the terminal event
    stored = await store.get(job.id)
    assert stored is not None and stored.terminal and stored.seq == len(events)


async def test_touch_extends_only_a_running_job_lease(store: JobStore) -> None:
    now = time.time()
    queued, q1 = new_job("op")
    running, r1 = new_job("op")
    for job, first in ((queued, q1), (running, r1)):
        await store.create(job, first, b"{}")
    await store.record(running.id, "started", None, lease_until=now + 5)
    assert await store.overdue(now) == []
    assert await store.overdue(now + 10) == [(running.id, "lease")]
    assert await store.touch(running.id, now + 100)
    assert await store.overdue(now + 10) == []
    assert await store.overdue(now + 101) == [(running.id, "lease")]
    # A later event without a lease keeps the lease it had.
    await store.record(running.id, "progress", {"p": 1})
    assert await store.overdue(now + 101) == [(running.id, "lease")]
    assert not await store.touch(queued.id, now + 100)
    assert not await store.touch("missing", now + 100)
    await store.record(running.id, "result", {})
    assert not await store.touch(running.id, now + 200)
    assert await store.overdue(now + 1000) == []


async def test_overdue_finds_unfinished_jobs_past_their_deadline(store: JobStore) -> None:
    now = time.time()
    queued, q1 = new_job("op", deadline_seconds=10)
    running, r1 = new_job("op", deadline_seconds=20)
    finished, f1 = new_job("op", deadline_seconds=10)
    endless, e1 = new_job("op")
    for job, first in ((queued, q1), (running, r1), (finished, f1), (endless, e1)):
        await store.create(job, first, b"{}")
    await store.record(running.id, "started", None)
    await store.record(finished.id, "result", {})
    assert await store.overdue(now + 5) == []
    assert await store.overdue(now + 15) == [(queued.id, "deadline")]
    assert sorted(await store.overdue(now + 25)) == sorted(
        [(queued.id, "deadline"), (running.id, "deadline")]
    )
    assert len(await store.overdue(now + 25, limit=1)) == 1


async def test_purge_deletes_only_old_finished_jobs_of_the_operation(store: JobStore) -> None:
    old, o1 = new_job("op")
    old2, o2 = new_job("op")
    unfinished, u1 = new_job("op")
    other, x1 = new_job("other")
    recent, n1 = new_job("op")
    for job, first in ((old, o1), (old2, o2), (unfinished, u1), (other, x1), (recent, n1)):
        await store.create(job, first, b"{}")
    await store.record(old.id, "result", {})
    await store.record(old2.id, "cancelled", {"code": "cancelled", "message": "m"})
    await store.record(other.id, "result", {})
    await asyncio.sleep(0.01)
    cut = time.time()
    await asyncio.sleep(0.01)
    await store.record(recent.id, "error", {"code": "x", "message": "y"})

    assert await store.purge("op", cut, limit=1) == 1
    assert await store.purge("op", cut) == 1
    assert await store.purge("op", cut) == 0
    for gone in (old, old2):
        assert await store.get(gone.id) is None
        assert await store.events(gone.id) == []
    for kept in (unfinished, other, recent):
        assert await store.get(kept.id) is not None
        assert await store.events(kept.id) != []


async def test_ping(store: JobStore) -> None:
    await store.ping()


# -- PostgreSQL only: many instances, one database --------------------------------------


async def test_two_instances_number_one_job_s_events_without_gaps(postgres_url: str) -> None:
    url = await fresh_database(postgres_url)
    a, b = await opened(url), await opened(f"{url}?max_size=4")
    try:
        job, first = new_job("op")
        await a.create(job, first, b"{}")
        await b.record(job.id, "started", None)
        progress = [(a if n % 2 else b).record(job.id, "progress", {"n": n}) for n in range(60)]
        await asyncio.gather(*progress)
        terminal = await asyncio.gather(
            *((a if n % 2 else b).record(job.id, "result", {"n": n}) for n in range(10))
        )
        assert sum(1 for o in terminal if o is not None and o.event is not None) == 1
        events = await a.events(job.id)
        assert [e.seq for e in events] == list(range(1, 64))
        assert [e.type for e in events].count("progress") == 60
        assert events[-1].type == "result"
        assert await b.get(job.id) == await a.get(job.id)
        # Idempotency holds across instances too.
        attempts = [new_job("op", idempotency_key="k") for _ in range(10)]
        outcomes = await asyncio.gather(
            *((a if n % 2 else b).create(j, f, b"{}") for n, (j, f) in enumerate(attempts))
        )
        assert sum(o.created for o in outcomes) == 1
        assert len({o.job.id for o in outcomes}) == 1
    finally:
        await a.close()
        await b.close()


async def test_instances_starting_at_once_create_the_schema_once(postgres_url: str) -> None:
    url = await fresh_database(postgres_url)
    stores = [open_store(url) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    db = await asyncpg.connect(url)
    try:
        assert await db.fetch("SELECT version FROM gateway_schema") == [(1,)]
        await db.execute("UPDATE gateway_schema SET version = 99")
    finally:
        await db.close()
    with pytest.raises(RuntimeError, match="schema version 99") as refused:
        await opened(url)
    assert "@" not in str(refused.value) or ":***@" in str(refused.value)


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    from tests.support import free_port

    store = open_store(f"postgresql://gw:s3cret@127.0.0.1:{free_port()}/db")
    with pytest.raises(RuntimeError) as refused:
        await store.open()
    assert "s3cret" not in str(refused.value) and "gw:***@127.0.0.1" in str(refused.value)


async def test_a_gateway_runs_on_postgres(
    postgres_url: str, rabbit, run_worker, tmp_path: Path
) -> None:
    url = await fresh_database(postgres_url)
    settings, ops = make_settings(tmp_path, rabbit.url, store_url=url)
    async with serve_gateway(settings, ops) as one:
        await run_worker(adder(one, rabbit.url))
        async with one.client() as http:
            r = await http.post(f"/v1/ops/{one.op('math.add')}?wait=10", json={"a": 2, "b": 3})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "succeeded" and job["result"] == {"sum": 5}
        # Any instance answers for any job: another one reads it from the shared store.
        # (Started only now: instances share the answers queue, and the first one's
        # waiter above is woken only by an answer that it consumed itself.)
        async with serve_gateway(settings, ops) as two, two.client() as http:
            seen = await http.get(r.headers["location"])
            events = await http.get(f"{r.headers['location']}/events")
        assert seen.status_code == 200 and seen.json() == job
        assert [e["type"] for e in events.json()["events"]] == ["queued", "result"]


async def test_a_repeated_progress_adds_no_event(store) -> None:
    """A redelivered progress answer (equal to the job's current progress) is absorbed."""
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    assert (await store.record(job.id, "progress", {"done": 1})).event is not None
    assert (await store.record(job.id, "progress", {"done": 1})).event is None
    assert (await store.record(job.id, "progress", {"done": 2})).event is not None
    assert [e.type for e in await store.events(job.id)] == ["queued", "progress", "progress"]


async def test_keyed_jobs_never_published_are_overdue_after_a_grace(store: JobStore) -> None:
    now = time.time()
    unpublished, u1 = new_job("op", idempotency_key="k1")
    published, p1 = new_job("op", idempotency_key="k2")
    unkeyed, n1 = new_job("op")  # never marked: its id is given out only once confirmed
    running, r1 = new_job("op", idempotency_key="k3")  # a worker answered: RabbitMQ had it
    for job, first in ((unpublished, u1), (published, p1), (unkeyed, n1), (running, r1)):
        await store.create(job, first, b"{}")
    await store.mark_published(published.id)
    await store.record(running.id, "started", None)
    assert await store.overdue(now) == []  # not asked
    assert await store.overdue(now, unconfirmed_before=now - 60) == []  # within the grace
    assert await store.overdue(now, unconfirmed_before=now + 1) == [(unpublished.id, "unconfirmed")]


async def test_a_failing_write_is_undone_alone(tmp_path: Path) -> None:
    # SQLite commits the writes waiting together in one transaction: one that fails
    # midway is rolled back alone, the others hold.
    store = SQLiteStore(tmp_path / "jobs.sqlite3")
    await store.open()
    try:
        jobs = [new_job("op") for _ in range(10)]

        def failing(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO meta (name, value) VALUES ('half-done', 'x')")
            raise RuntimeError("a write that fails midway")

        outcomes = await asyncio.gather(
            *(store.create(job, first, b"{}") for job, first in jobs[:5]),
            store._run(failing),
            *(store.create(job, first, b"{}") for job, first in jobs[5:]),
            return_exceptions=True,
        )
        assert isinstance(outcomes.pop(5), RuntimeError)
        assert all(not isinstance(o, BaseException) and o.created for o in outcomes)
        for job, _ in jobs:
            assert await store.get(job.id) == job
        half_done = await store._read(
            lambda db: db.execute("SELECT count(*) FROM meta WHERE name = 'half-done'").fetchone()
        )
        assert half_done == (0,)
    finally:
        await store.close()
