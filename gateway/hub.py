"""Waiters: long-polls and streams that sleep until their job has a new event.

The store is the truth; the hub wakes sleepers and hands them what changed (the job as
it now is, and the new event), so a wake-up usually needs no store read at all. A waiter
that finds a gap in what it was handed reads the store instead; a lost notification can
delay a waiter (up to its timeout) but never make it answer wrongly. Nothing here polls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.jobs import Event, Job

T = TypeVar("T")


class Watch:
    """One sleeper's view of one job: a wake-up flag, and what was noticed since `arm`.
    A context manager: watching from `with` to its end. (A class, not a generator-based
    context manager: at 10,000 idle waiters every few hundred bytes count.)"""

    __slots__ = ("_hub", "_job_id", "_woken", "events", "job")

    def __init__(self, hub: Hub, job_id: str) -> None:
        self._hub = hub
        self._job_id = job_id
        self._woken = asyncio.Event()
        self.job: Job | None = None
        self.events: list[Event] = []

    def __enter__(self) -> Watch:
        self._hub._add(self._job_id, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub._remove(self._job_id, self)

    def arm(self) -> None:
        """Call before reading the store: anything after this wakes `sleep`."""
        self._woken.clear()
        self.job = None
        self.events.clear()

    def notice(self, job: Job | None, event: Event | None) -> None:
        if job is not None and (self.job is None or job.seq >= self.job.seq):
            self.job = job
        if event is not None:
            self.events.append(event)
        self._woken.set()

    def events_after(self, cursor: int) -> list[Event] | None:
        """The noticed events past `cursor` if they follow it without a gap, else None."""
        fresh = sorted((e for e in self.events if e.seq > cursor), key=lambda e: e.seq)
        if (
            fresh
            and fresh[0].seq == cursor + 1
            and all(b.seq == a.seq + 1 for a, b in itertools.pairwise(fresh))
        ):
            return fresh
        return None

    async def sleep(self, timeout: float) -> bool:
        """True if woken, False if the timeout ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self._woken.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    def __init__(self) -> None:
        self._watches: defaultdict[str, set[Watch]] = defaultdict(set)
        self._count = 0

    @property
    def waiting(self) -> int:
        return self._count

    def watch(self, job_id: str) -> Watch:
        """`with hub.watch(job_id) as watch:` wakes `watch` on the job's events."""
        return Watch(self, job_id)

    def _add(self, job_id: str, watch: Watch) -> None:
        self._watches[job_id].add(watch)
        self._count += 1

    def _remove(self, job_id: str, watch: Watch) -> None:
        self._count -= 1
        watches = self._watches.get(job_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[job_id]

    def wake_all(self) -> None:
        """Wake every waiter to re-read the store (after notices may have been lost)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.notice(None, None)

    def notify(self, job_id: str, job: Job | None = None, event: Event | None = None) -> None:
        """The job has changed (to `job`, by `event`, when known): wake its watchers."""
        for watch in self._watches.get(job_id, ()):
            watch.notice(job, event)

    async def wait_until(
        self,
        job_id: str,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        timeout: float,
        noticed: Callable[[Watch, T], T | None] = lambda watch, last: None,
    ) -> T:
        """Until `done(value)` or `timeout` seconds pass, return the last value. The value
        is read from the store first, then taken from notices (`noticed(watch, last)`),
        falling back to a store read when a notice does not suffice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.watch(job_id) as watch:
            watch.arm()
            value = await read()
            while True:
                remaining = deadline - loop.time()
                if done(value):
                    return value
                if remaining <= 0:
                    # Out of time: answer with what is true now, in case a notice was lost.
                    return await read()
                if not await watch.sleep(remaining):
                    continue
                fresh = noticed(watch, value)
                watch.arm()
                value = fresh if fresh is not None else await read()
