"""Following a numbered log of events: the one loop of log reads and hub wake-ups that
every reader of events shares (SSE streams and long-polls, of a job's events and of a
topic's messages).

The log is the truth and the hub is the doorbell (gateway/hub.py): a follower reads what
the log holds past its cursor, then sleeps until woken; a wake-up usually carries a job's
new events, gap-free, so it needs no store read; any gap, or a wake-up without events,
means reading the log again. A lost notice delays a follower, never misleads it. A job's
log is the job store (`JobLog`); a topic's is its stream (gateway/topics.py `TopicLog`).

The store being out is the caller's to handle: `next` raises (ServiceUnavailable, via the
bounded store), and the follower stays consistent, reading the store first on the next
call. A stream keeps its client and retries; a long-poll answers 503.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar, cast

from gateway.hub import Hub, Watch
from gateway.jobs import Event
from gateway.store import JobStore
from gateway.types import TERMINAL_EVENTS


class Numbered(Protocol):
    """An entry of a log: a job's event, a topic's message."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> str: ...


E = TypeVar("E", bound=Numbered)


class EventLog(Protocol[E]):
    async def read(self, key: str, after: int) -> tuple[list[E], int, bool]:
        """The entries of `key` past `after`, in order; the cursor to go on from; and
        whether that was all there is now (else the follower reads again at once)."""
        ...

    async def ended(self, key: str, cursor: int) -> bool:
        """Whether nothing can come past `cursor` (a job gone, or ended at or before it)."""
        ...


class JobLog:
    """A job's events, as the job store holds them."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def read(self, job_id: str, after: int) -> tuple[list[Event], int, bool]:
        events = await self.store.events(job_id, after)
        return events, events[-1].seq if events else after, True

    async def ended(self, job_id: str, cursor: int) -> bool:
        job = await self.store.get(job_id)
        return job is None or (job.terminal and cursor >= job.seq)


class Follow(Generic[E]):
    """One reader's cursor on one log (a job's events, a topic's messages). A context
    manager: it holds a hub watch (one waiter, counted in `Hub.waiting`) from `with` to
    its end.

    With `until_end`, the follower ends (`ended` turns True) once it has handed out a
    terminal event, or an empty read finds the log ended at the cursor.
    """

    __slots__ = ("_log", "_need_read", "_watch", "cursor", "ended", "key", "until_end")

    def __init__(
        self, hub: Hub, log: EventLog[E], key: str, after: int, *, until_end: bool
    ) -> None:
        self.key = key
        self.cursor = after
        """Where the reader is: the seq of the last entry handed out, or past entries the
        log skipped for it (or the caller's starting point)."""
        self.until_end = until_end
        self.ended = False
        self._log = log
        self._watch: Watch = hub.watch(key)
        self._need_read = True

    def __enter__(self) -> Follow[E]:
        self._watch.__enter__()
        self._watch.arm()  # before the first read: anything stored after it wakes us
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.__exit__(*exc)

    async def next(self, timeout: float) -> list[E]:
        """The events past the cursor, in order, waiting up to `timeout` seconds for the
        first; [] when the time ran out (or the follower ended) with nothing new."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ended:
            if self._need_read:
                events = await self.read()
                if events or self.ended:
                    return events
                if self._need_read:  # a part read, with nothing for this reader: go on
                    if loop.time() >= deadline:
                        return []
                    continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._watch.sleep(remaining):
                return []
            # What woke us usually carries the new events; a gap means read the store.
            fresh = self._watch.events_after(self.cursor)
            self._watch.arm()
            if fresh is not None:
                return self._hand_out(cast(list[E], fresh), fresh[-1].seq)
            self._need_read = True
        return []

    async def read(self) -> list[E]:
        """The entries the log holds past the cursor now, without waiting."""
        events, cursor, complete = await self._log.read(self.key, self.cursor)
        if not events and self.until_end and await self._log.ended(self.key, self.cursor):
            self.ended = True  # purged, or the reader already has the end
        # Only once the log answered (an outage reads again), and all it has was read.
        self._need_read = not complete
        return self._hand_out(events, cursor)

    def _hand_out(self, events: list[E], cursor: int) -> list[E]:
        if self.until_end:
            for i, event in enumerate(events):
                if event.type in TERMINAL_EVENTS:
                    self.ended = True
                    events = events[: i + 1]
                    cursor = event.seq
                    break
        self.cursor = cursor
        return events
