"""Waiters: long-polls and streams that sleep until their job has a new event.

The store is the truth; the hub only wakes sleepers. A waiter re-reads the store after
every wake-up, so a lost or duplicate notification can delay it (up to its timeout) but
never make it answer wrongly. Nothing here polls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class Watch:
    """One sleeper's wake-up flag for one job."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def arm(self) -> None:
        """Call before reading the store: any event after this wakes `sleep`."""
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    async def sleep(self, timeout: float) -> bool:
        """True if woken, False if the timeout ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    def __init__(self) -> None:
        self._watches: defaultdict[str, set[Watch]] = defaultdict(set)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._watches.values())

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        watch = Watch()
        self._watches[job_id].add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(job_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[job_id]

    def notify(self, job_id: str) -> None:
        """The job has a new event: wake everyone watching it."""
        for watch in self._watches.get(job_id, ()):
            watch.wake()

    async def wait_until(
        self,
        job_id: str,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        timeout: float,
    ) -> T:
        """Re-read until `done(value)` or `timeout` seconds pass; return the last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.watch(job_id) as watch:
            while True:
                watch.arm()
                value = await read()
                remaining = deadline - loop.time()
                if done(value) or remaining <= 0:
                    return value
                await watch.sleep(remaining)
