"""Following one job's event log: the one loop of store reads and hub wake-ups that every
reader of events shares (SSE streams, long-polls, and later topic streams).

The store is the truth and the hub is the doorbell (gateway/hub.py): a follower reads
what is stored past its cursor, then sleeps until woken; a wake-up usually carries the
new events, gap-free, so it needs no store read; any gap, or a wake-up without events,
means reading the store again. A lost notice delays a follower, never misleads it.

The store being out is the caller's to handle: `next` raises (ServiceUnavailable, via the
bounded store), and the follower stays consistent, reading the store first on the next
call. A stream keeps its client and retries; a long-poll answers 503.
"""

from __future__ import annotations

import asyncio

from gateway.hub import Hub, Watch
from gateway.jobs import Event
from gateway.store import JobStore
from gateway.types import TERMINAL_EVENTS


class Follow:
    """One reader's cursor on one job's events. A context manager: it holds a hub watch
    (one waiter, counted in `Hub.waiting`) from `with` to its end.

    With `until_end`, the follower ends (`ended` turns True) once it has handed out the
    terminal event, or an empty read finds the job gone or already ended at the cursor.
    """

    __slots__ = ("_need_read", "_store", "_watch", "cursor", "ended", "job_id", "until_end")

    def __init__(
        self, hub: Hub, store: JobStore, job_id: str, after: int, *, until_end: bool
    ) -> None:
        self.job_id = job_id
        self.cursor = after
        """The seq of the last event handed out (or the caller's starting point)."""
        self.until_end = until_end
        self.ended = False
        self._store = store
        self._watch: Watch = hub.watch(job_id)
        self._need_read = True

    def __enter__(self) -> Follow:
        self._watch.__enter__()
        self._watch.arm()  # before the first read: anything stored after it wakes us
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.__exit__(*exc)

    async def next(self, timeout: float) -> list[Event]:
        """The events past the cursor, in order, waiting up to `timeout` seconds for the
        first; [] when the time ran out (or the follower ended) with nothing new."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ended:
            if self._need_read:
                events = await self.read()
                if events or self.ended:
                    return events
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._watch.sleep(remaining):
                return []
            # What woke us usually carries the new events; a gap means read the store.
            fresh = self._watch.events_after(self.cursor)
            self._watch.arm()
            if fresh is not None:
                return self._hand_out(fresh)
            self._need_read = True
        return []

    async def read(self) -> list[Event]:
        """The events stored past the cursor now, without waiting."""
        events = await self._store.events(self.job_id, self.cursor)
        if not events and self.until_end:
            job = await self._store.get(self.job_id)
            if job is None or (job.terminal and self.cursor >= job.seq):
                self.ended = True  # purged, or the reader already has the end
        self._need_read = False  # only once the store answered: an outage reads again
        return self._hand_out(events)

    def _hand_out(self, events: list[Event]) -> list[Event]:
        for i, event in enumerate(events):
            if event.type in TERMINAL_EVENTS and self.until_end:
                self.ended = True
                events = events[: i + 1]
                break
        if events:
            self.cursor = events[-1].seq
        return events
