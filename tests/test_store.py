"""The SQLite job store: numbered events, first terminal event wins, idempotency keys."""

from __future__ import annotations

from pathlib import Path

from gateway.jobs import new_job
from gateway.store import SQLiteStore, open_store


async def opened(tmp_path: Path) -> SQLiteStore:
    store = open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    assert isinstance(store, SQLiteStore)
    await store.open()
    return store


async def test_events_are_numbered_and_the_first_terminal_wins(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
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
        assert await store.record("missing", "result", {}) is None
    finally:
        await store.close()


async def test_idempotency_key_is_unique_per_operation(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        a, a1 = new_job("op", idempotency_key="k", request_hash="h")
        b, b1 = new_job("op", idempotency_key="k", request_hash="h")
        c, c1 = new_job("other", idempotency_key="k", request_hash="h")
        assert (await store.create(a, a1, b"1")).created
        repeat = await store.create(b, b1, b"2")
        assert not repeat.created and repeat.job.id == a.id and repeat.request == b"1"
        assert (await store.create(c, c1, b"3")).created
    finally:
        await store.close()


async def test_jobs_survive_reopening(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.mark_published(job.id)
    await store.close()
    store = await opened(tmp_path)
    try:
        assert (await store.get(job.id)) == job
    finally:
        await store.close()


async def test_discard_forgets_everything(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        job, first = new_job("op")
        await store.create(job, first, b"{}")
        await store.discard(job.id)
        assert await store.get(job.id) is None
        assert await store.events(job.id) == []
    finally:
        await store.close()
