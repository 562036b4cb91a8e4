"""A job store that cannot hang the gateway, and whose outages are 503s.

Every call ends within `timeout` seconds. A store that fails the way a store fails (its
`unavailable_errors`: down, restarting, refusing connections, locked) or does not answer
in time raises `StoreUnavailable` — 503 with Retry-After, which a client retries — never a
500. And a store that stalls (a paused database: every call in flight overdue) fails the
calls after it at once, until a ping begun after the stall succeeds (gateway/stall.py).

A store whose calls return at once when cancelled (SQLite's run in threads) is simply
cancelled on time. Otherwise the call runs in a task of its own that is left behind on a
timeout: a driver cancelled mid-query may wait on the dead server while it cleans up
(asyncpg does, on a paused PostgreSQL), and the request must not wait with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.errors import ServiceUnavailable
from gateway.jobs import Event, Job
from gateway.stall import StallWatch
from gateway.store.base import Created, JobQuery, JobStore, JobTiming, Overdue, Recorded
from gateway.types import JSON, EventType

log = logging.getLogger("gateway.store")

T = TypeVar("T")

PING_INTERVAL = 0.5


class StoreUnavailable(ServiceUnavailable):
    """The job store cannot serve now: the client should retry."""

    code = "store_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="store_unavailable", retry_after=2)


class BoundedStore(JobStore):
    def __init__(self, store: JobStore, *, timeout: float, stall_after: float) -> None:
        self.store = store
        self.timeout = timeout
        self.shared = store.shared
        self.stall = StallWatch(stall_after)
        self._pinger: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._failing = False

    @property
    def identity(self) -> str:
        return self.store.identity

    async def _bounded(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        probe: bool = False,
        timeout: float | None = None,
    ) -> T:
        """`call()`, within the timeout; StoreUnavailable if the store cannot serve. While
        the store is stalled only a `probe` goes through (see _ping_while_stalled)."""
        if not probe and self.stall.check():
            raise StoreUnavailable("the job store is not answering; retry shortly")
        try:
            with self.stall.call():
                if self.store.cancel_safe:
                    result = await self._within(call, timeout or self.timeout)
                else:
                    result = await self._left_behind_after(call, timeout or self.timeout)
        except self.store.unavailable_errors as exc:
            if not self._failing:
                log.warning("job store unavailable: %s", exc or type(exc).__name__)
            self._failing = True
            raise StoreUnavailable("the job store cannot serve now; retry shortly") from exc
        if self._failing:
            log.info("the job store answers again")
            self._failing = False
        return result

    async def _within(self, call: Callable[[], Awaitable[T]], timeout: float) -> T:
        """A call that returns at once when cancelled: cancel it on time."""
        try:
            async with asyncio.timeout(timeout):
                return await call()
        except TimeoutError:
            self.stall.mark()
            raise StoreUnavailable("the job store did not answer in time; retry shortly") from None

    async def _left_behind_after(self, call: Callable[[], Awaitable[T]], timeout: float) -> T:
        """A call whose clean-up may wait on the store: run it in a task of its own, and on
        time leave that task behind."""
        task = asyncio.ensure_future(call())
        try:
            done, _ = await asyncio.wait((task,), timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            self.stall.mark()
            self._abandon(task)
            raise StoreUnavailable("the job store did not answer in time; retry shortly")
        return task.result()

    def _abandon(self, task: asyncio.Future[T]) -> None:
        """Cancel a call that overran; its clean-up may wait for the store, so keep it
        referenced until it ends."""
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning

    async def _ping_while_stalled(self) -> None:
        while True:
            await self.stall.stalled.wait()
            with contextlib.suppress(StoreUnavailable):
                await self._bounded(self.store.ping, probe=True, timeout=self.stall.overdue_after)
            if self.stall.stalled.is_set():
                await asyncio.sleep(PING_INTERVAL)

    async def open(self) -> None:
        await self.store.open()
        self._pinger = asyncio.create_task(self._ping_while_stalled(), name="store-ping")

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await self.store.close()

    async def ping(self) -> None:
        """Answered within the stall threshold, or the store counts as stalled: /readyz
        must say so at once, not after a whole call timeout."""
        await self._bounded(self.store.ping, timeout=self.stall.overdue_after)

    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        return await self._bounded(lambda: self.store.create(job, first, request))

    async def mark_published(self, job_id: str) -> None:
        await self._bounded(lambda: self.store.mark_published(job_id))

    async def discard(self, job_id: str) -> None:
        await self._bounded(lambda: self.store.discard(job_id))

    async def get(self, job_id: str) -> Job | None:
        return await self._bounded(lambda: self.store.get(job_id))

    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        return await self._bounded(
            lambda: self.store.record(job_id, type, data, lease_until=lease_until)
        )

    async def touch(self, job_id: str, lease_until: float) -> bool:
        return await self._bounded(lambda: self.store.touch(job_id, lease_until))

    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        return await self._bounded(
            lambda: self.store.overdue(now, limit, unconfirmed_before=unconfirmed_before)
        )

    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        return await self._bounded(lambda: self.store.purge(op, finished_before, limit))

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return await self._bounded(lambda: self.store.events(job_id, after, limit))

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await self._bounded(lambda: self.store.list_jobs(query))

    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        return await self._bounded(lambda: self.store.recent_timings(op, since, limit))
