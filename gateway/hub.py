"""Waiters: long-polls and streams that sleep until their job has a new event.

The store is the truth; the hub wakes sleepers and hands them what changed (the job as
it now is, and the new event), so a wake-up usually needs no store read at all. A waiter
that finds a gap in what it was handed reads the store instead; a lost notification can
delay a waiter (up to its timeout) but never make it answer wrongly. Nothing here polls.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.jobs import Event, Job

T = TypeVar("T")

TICK = 0.05
"""Seconds: sleepers' timeouts are kept in buckets this wide, so a timeout fires up to
this much late (never early), and one timer serves every sleeper of a bucket."""


class Watch:
    """One sleeper's view of one job: a wake-up flag, and what was noticed since `arm`.
    A context manager: watching from `with` to its end. (A class, not a generator-based
    context manager: at 10,000 idle waiters every few hundred bytes count; so too a
    sleep is one future and a place in the hub's timer buckets, not an `asyncio.Event`,
    an `asyncio.timeout` and a timer of its own.)"""

    __slots__ = ("_hub", "_job_id", "_tick", "_waiter", "_woken", "events", "job")

    def __init__(self, hub: Hub, job_id: str) -> None:
        self._hub = hub
        self._job_id = job_id
        self._woken = False
        self._waiter: asyncio.Future[bool] | None = None
        """The sleep in progress, if any."""
        self._tick: int | None = None
        """The timer bucket this watch sleeps in, if any."""
        self.job: Job | None = None
        self.events: list[Event] | None = None

    def __enter__(self) -> Watch:
        self._hub._add(self._job_id, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._waiter = None
        self._hub._unschedule(self)
        self._hub._remove(self._job_id, self)

    def arm(self) -> None:
        """Call before reading the store: anything after this wakes `sleep`."""
        self._woken = False
        self.job = None
        self.events = None  # not cleared: the list may have been handed out

    def notice(self, job: Job | None, event: Event | None) -> None:
        if job is not None and (self.job is None or job.seq >= self.job.seq):
            self.job = job
        if event is not None:
            if self.events is None:
                self.events = [event]
            else:
                self.events.append(event)
        self._woken = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._hub._unschedule(self)
            if not waiter.done():
                waiter.set_result(True)

    def events_after(self, cursor: int) -> list[Event] | None:
        """The noticed events past `cursor` if they follow it without a gap, else None."""
        events = self.events
        if not events:
            return None
        if len(events) == 1:  # the usual wake-up: one new event
            return events if events[0].seq == cursor + 1 else None
        fresh = sorted((e for e in events if e.seq > cursor), key=lambda e: e.seq)
        if (
            fresh
            and fresh[0].seq == cursor + 1
            and all(b.seq == a.seq + 1 for a, b in itertools.pairwise(fresh))
        ):
            return fresh
        return None

    def sleep(self, timeout: float) -> asyncio.Future[bool]:
        """Await it: True once woken (at once if woken since `arm`), False when `timeout`
        seconds ran out."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        if self._woken:
            waiter.set_result(True)
            return waiter
        self._waiter = waiter
        self._hub._schedule(self, loop, timeout)
        return waiter

    def _timed_out(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._tick = None
        if waiter is not None and not waiter.done():
            waiter.set_result(False)


class Hub:
    def __init__(self) -> None:
        self._watches: defaultdict[str, set[Watch]] = defaultdict(set)
        self._count = 0
        self._ticks: dict[int, set[Watch]] = {}
        """Sleeping watches by the bucket of their deadline; each bucket has one timer."""

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

    def _schedule(self, watch: Watch, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._unschedule(watch)  # a sleep given up (cancelled) may have left it in one
        tick = math.ceil((loop.time() + timeout) / TICK)
        sleepers = self._ticks.get(tick)
        if sleepers is None:
            sleepers = self._ticks[tick] = set()
            loop.call_at(tick * TICK, self._time_out, tick)
        sleepers.add(watch)
        watch._tick = tick

    def _unschedule(self, watch: Watch) -> None:
        if watch._tick is not None:
            sleepers = self._ticks.get(watch._tick)
            if sleepers is not None:
                sleepers.discard(watch)  # an emptied bucket goes when its timer fires
            watch._tick = None

    def _time_out(self, tick: int) -> None:
        for watch in self._ticks.pop(tick, ()):
            watch._timed_out()

    def wake_all(self) -> None:
        """Wake every waiter to re-read the store (after notices may have been lost)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.notice(None, None)

    def notify(self, job_id: str, job: Job | None = None, event: Event | None = None) -> None:
        """The job has changed (to `job`, by `event`, when known): wake its watchers."""
        watches = self._watches.get(job_id)
        if watches:
            for watch in watches:
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
                    return await read()  # out of time (see above)
                fresh = noticed(watch, value)
                watch.arm()
                value = fresh if fresh is not None else await read()
