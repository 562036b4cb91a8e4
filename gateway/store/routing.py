"""One store interface over two stores: light operations' jobs in memory, everything
else in the durable store. A job is found where it lives; the rest of the gateway never
asks which. A question about one operation goes to its store; a listing of any
operation asks both, and merges their answers."""

from __future__ import annotations

import heapq
import itertools

from gateway.jobs import Event, Job
from gateway.store.base import (
    Created,
    JobQuery,
    JobStore,
    JobTiming,
    Overdue,
    Recorded,
    newest_first,
)
from gateway.store.memory import MemoryStore
from gateway.types import JSON, EventType


class DurabilityRouter(JobStore):
    def __init__(self, durable: JobStore, light: MemoryStore, light_ops: set[str]) -> None:
        self.durable = durable
        self.light = light
        self.light_ops = frozenset(light_ops)
        self.shared = durable.shared

    @property
    def identity(self) -> str:
        return self.durable.identity

    def _of(self, job_id: str) -> JobStore:
        return self.light if job_id in self.light else self.durable

    async def open(self) -> None:
        await self.durable.open()
        await self.light.open()

    async def close(self) -> None:
        await self.light.close()
        await self.durable.close()

    async def ping(self) -> None:
        await self.durable.ping()

    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        store = self.light if job.op in self.light_ops else self.durable
        return await store.create(job, first, request)

    async def mark_published(self, job_id: str) -> None:
        await self._of(job_id).mark_published(job_id)

    async def discard(self, job_id: str) -> None:
        await self._of(job_id).discard(job_id)

    async def get(self, job_id: str) -> Job | None:
        return await self._of(job_id).get(job_id)

    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        return await self._of(job_id).record(job_id, type, data, lease_until=lease_until)

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return await self._of(job_id).events(job_id, after, limit)

    async def touch(self, job_id: str, lease_until: float) -> bool:
        return await self._of(job_id).touch(job_id, lease_until)

    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        before = unconfirmed_before
        return [
            *await self.light.overdue(now, limit, unconfirmed_before=before),
            *await self.durable.overdue(now, limit, unconfirmed_before=before),
        ]

    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        return await self._of_op(op).purge(op, finished_before, limit)

    def _of_op(self, op: str) -> JobStore:
        return self.light if op in self.light_ops else self.durable

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        if query.op is not None:
            return await self._of_op(query.op).list_jobs(query)
        # Each answers its newest `limit`, in order: the newest `limit` of both are there.
        light = await self.light.list_jobs(query)
        durable = await self.durable.list_jobs(query)
        merged = heapq.merge(light, durable, key=newest_first, reverse=True)
        return list(itertools.islice(merged, query.limit))

    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        return await self._of_op(op).recent_timings(op, since, limit)
