"""The store of `light` operations: jobs and events in this process's memory.

Light is for throwaway RPC where speed matters more than surviving a crash: no disk, no
fsync. What it gives up, exactly: a light job lives only in the instance that accepted
it, and is gone if that instance restarts (then `GET` answers 404). Everything else holds
as for durable jobs: the same state machine, the first terminal event wins, and a result
is never wrong. At most `max_jobs` jobs are kept; past that, the oldest finished ones go
first (then the oldest of all).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.jobs import Event, Job, apply
from gateway.store.base import (
    ANSWER_EVENTS,
    Created,
    JobQuery,
    JobStore,
    JobTiming,
    Overdue,
    Recorded,
    newest_first,
)
from gateway.types import JSON, EventType


@dataclass
class _Entry:
    job: Job
    request: bytes
    published: bool = False
    lease_until: float | None = None
    events: list[Event] = field(default_factory=list)


class MemoryStore(JobStore):
    cancel_safe = True  # see JobStore.cancel_safe

    def __init__(self, max_jobs: int = 100_000) -> None:
        self.max_jobs = max_jobs
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._keys: dict[tuple[str, str], str] = {}
        self._unfinished: dict[str, None] = {}  # what the sweep looks at: not all jobs
        self._identity = secrets.token_hex(8)

    @property
    def identity(self) -> str:
        return self._identity

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self._entries.clear()
        self._keys.clear()
        self._unfinished.clear()

    async def ping(self) -> None:
        pass

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        if job.idempotency_key is not None:
            known = self._keys.get((job.op, job.idempotency_key))
            if known is not None and known in self._entries:
                entry = self._entries[known]
                return Created(entry.job, False, entry.request, entry.published)
            self._keys[(job.op, job.idempotency_key)] = job.id
        self._entries[job.id] = _Entry(job, request, events=[first])
        self._unfinished[job.id] = None
        self._evict()
        return Created(job, True, request, False)

    def _evict(self) -> None:
        excess = len(self._entries) - self.max_jobs
        if excess <= 0:
            return
        # The oldest are nearly always finished: this looks at few entries, not all.
        finished = list(
            itertools.islice((i for i, e in self._entries.items() if e.job.terminal), excess)
        )
        for job_id in finished:
            self._forget(job_id)
        while len(self._entries) > self.max_jobs:
            self._forget(next(iter(self._entries)))

    def _forget(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        self._unfinished.pop(job_id, None)
        if entry is not None and entry.job.idempotency_key is not None:
            self._keys.pop((entry.job.op, entry.job.idempotency_key), None)

    async def mark_published(self, job_id: str) -> None:
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.published = True

    async def discard(self, job_id: str) -> None:
        self._forget(job_id)

    async def get(self, job_id: str) -> Job | None:
        entry = self._entries.get(job_id)
        return None if entry is None else entry.job

    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        applied = apply(entry.job, type, data)
        if applied is None:
            return Recorded(entry.job, None)
        entry.job, event = applied
        entry.events.append(event)
        if entry.job.terminal:
            self._unfinished.pop(job_id, None)
        if lease_until is not None:
            entry.lease_until = lease_until
        return Recorded(entry.job, event)

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        entry = self._entries.get(job_id)
        if entry is None:
            return []
        # seq n is at index n-1: the log has no gaps.
        return entry.events[after : after + limit]

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        # A look at every job (at most max_jobs): creation order is nearly, not exactly,
        # created_at order (clocks step), so no early stop is safe.
        jobs = (e.job for e in self._entries.values() if query.matches(e.job))
        return heapq.nlargest(query.limit, jobs, key=newest_first)

    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        timings = (
            JobTiming(
                e.job.status,
                e.job.created_at,
                next((v.time for v in e.events if v.type in ANSWER_EVENTS), None),
                e.job.updated_at,
            )
            for e in self._entries.values()
            if e.job.op == op and e.job.updated_at >= since
        )
        return heapq.nlargest(limit, timings, key=lambda t: t.updated_at)

    async def touch(self, job_id: str, lease_until: float) -> bool:
        entry = self._entries.get(job_id)
        if entry is None or entry.job.status != "running":
            return False
        entry.lease_until = lease_until
        return True

    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        found: list[tuple[str, Overdue]] = []
        for job_id in self._unfinished:
            entry = self._entries[job_id]
            job = entry.job
            if job.deadline_at is not None and job.deadline_at < now:
                found.append((job_id, "deadline"))
            elif (
                unconfirmed_before is not None
                and job.status == "queued"
                and not entry.published
                and job.idempotency_key is not None
                and job.created_at < unconfirmed_before
            ):
                found.append((job_id, "unconfirmed"))
            elif (
                job.status == "running"
                and entry.lease_until is not None
                and (entry.lease_until < now)
            ):
                found.append((job_id, "lease"))
            if len(found) >= limit:
                break
        return found

    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        doomed: list[str] = []
        for job_id, entry in self._entries.items():  # oldest first
            job = entry.job
            if job.created_at >= finished_before or len(doomed) >= limit:
                break  # made after the cutoff, so finished after it too, as all after it
            if job.op == op and job.terminal and job.updated_at < finished_before:
                doomed.append(job_id)
        for job_id in doomed:
            self._forget(job_id)
        return len(doomed)
