"""`Follow`, the one loop that reads a job's events for SSE and long-poll: events come from
notices without a store read when they follow the cursor, from the store after a gap;
the follower ends at the terminal event; a store outage raises and is read again next."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ServiceUnavailable
from gateway.follow import Follow, JobLog
from gateway.hub import Hub
from gateway.jobs import Event, new_job
from gateway.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """A memory store that counts event reads, and can be out."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.out = False

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        if self.out:
            raise ServiceUnavailable("the job store is out", code="store_unavailable")
        self.reads += 1
        return await super().events(job_id, after, limit)


async def record(store: CountingStore, hub: Hub, job_id: str, type_: str, data: object) -> None:
    recorded = await store.record(job_id, type_, data)  # type: ignore[arg-type]
    assert recorded is not None and recorded.event is not None
    hub.notify(job_id, recorded.job, recorded.event)


async def test_a_stream_follows_notices_then_ends() -> None:
    hub, store = Hub(), CountingStore()
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    with Follow(hub, JobLog(store), job.id, 0, until_end=True) as follow:
        assert hub.waiting == 1
        assert [e.type for e in await follow.next(1)] == ["queued"]
        assert store.reads == 1
        assert await follow.next(0.01) == []  # idle: nothing new, no store read
        assert store.reads == 1
        await record(store, hub, job.id, "started", None)
        await record(store, hub, job.id, "progress", {"n": 1})
        assert [e.seq for e in await follow.next(1)] == [2, 3]
        assert store.reads == 1  # the notices carried them
        await record(store, hub, job.id, "result", {"r": 1})
        assert [e.type for e in await follow.next(1)] == ["result"]
        assert follow.ended and follow.cursor == 4
    assert hub.waiting == 0


async def test_a_gap_reads_the_store_and_an_outage_is_retried() -> None:
    hub, store = Hub(), CountingStore()
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    with Follow(hub, JobLog(store), job.id, 1, until_end=True) as follow:
        assert await follow.next(0.01) == []
        await store.record(job.id, "started", None)  # stored, never notified: a lost notice
        await record(store, hub, job.id, "progress", {"n": 1})
        assert [e.seq for e in await follow.next(1)] == [2, 3]  # from the store
        store.out = True
        await store.record(job.id, "progress", {"n": 2})  # lost notice again: a gap
        await record(store, hub, job.id, "progress", {"n": 3})
        with pytest.raises(ServiceUnavailable):
            await follow.next(1)
        store.out = False
        assert [e.seq for e in await follow.next(1)] == [4, 5]


async def test_the_end_already_seen_or_a_purged_job_ends_at_once() -> None:
    hub, store = Hub(), CountingStore()
    job, first = new_job("op")
    await store.create(job, first, b"{}")
    await store.record(job.id, "result", {"r": 1})
    with Follow(hub, JobLog(store), job.id, 2, until_end=True) as follow:
        assert await asyncio.wait_for(follow.next(60), 1) == [] and follow.ended
    with Follow(hub, JobLog(store), "gone", 0, until_end=True) as follow:
        assert await asyncio.wait_for(follow.next(60), 1) == [] and follow.ended
    # A long-poll (not until_end) just waits its time out.
    with Follow(hub, JobLog(store), job.id, 2, until_end=False) as follow:
        assert await follow.next(0.05) == [] and not follow.ended
