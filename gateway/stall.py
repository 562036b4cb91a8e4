"""Is a dependency answering at all? A broker or a store that stalls — a paused process,
a memory or disk alarm, a partition — is worse than one that is down: it takes a request
and never answers, so every client waits out its full timeout. This tells a stall apart
from slowness the same way for RabbitMQ (confirms) and for the job store (queries).

A `StallWatch` counts the calls in flight. Once the oldest has been waiting longer than
`overdue_after` (or the dependency said it is blocked), the dependency is *stalled*, and
stays so — callers fail fast with 503 and `/readyz` says not ready — until a call that
began after the stall succeeds. Whoever owns the watch sends that call (a probe) while
`stalled` is set: nothing else gets through meanwhile to prove it has recovered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StallWatch:
    def __init__(self, overdue_after: float, blocked: Callable[[], bool] = lambda: False) -> None:
        self.overdue_after = overdue_after
        self.blocked = blocked
        """Whether the dependency itself says it takes nothing now (connection.blocked)."""
        self.stalled = asyncio.Event()
        """Set while stalled: the owner's probe loop waits on it."""
        self.healthy_since = time.time()
        """When the last stall ended (epoch seconds)."""
        self._pending: dict[int, float] = {}  # in order of starting, so the first is oldest
        self._tokens = itertools.count()
        self._stalled_at: float | None = None
        self._last_success = time.monotonic()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one call to the dependency: a success that began after a stall ends it."""
        token = next(self._tokens)
        started = time.monotonic()
        self._pending[token] = started
        try:
            yield
        finally:
            del self._pending[token]
        self._last_success = time.monotonic()
        if self._stalled_at is not None and started >= self._stalled_at and not self.blocked():
            self._stalled_at = None
            self.healthy_since = time.time()
            self.stalled.clear()

    def mark(self) -> None:
        """A call timed out: the dependency is stalled (if it was not already)."""
        if self._stalled_at is None:
            self._stalled_at = time.monotonic()
            self.stalled.set()

    def check(self) -> bool:
        """True if stalled now: blocked, or the oldest call in flight is overdue."""
        if self._stalled_at is None:
            oldest = next(iter(self._pending.values()), None)
            if self.blocked() or (
                oldest is not None and time.monotonic() - oldest > self.overdue_after
            ):
                self.mark()
        return self._stalled_at is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def idle_for(self) -> float:
        """Seconds since the last call succeeded."""
        return time.monotonic() - self._last_success
