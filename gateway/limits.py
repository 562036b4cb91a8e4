"""Per-client limits: a request rate (moving window, via the `limits` library) and a
share of the waiting requests. A client is its token's subject, or its address when auth
is off. Over a limit: 429 with Retry-After."""

from __future__ import annotations

import math
import time
from collections import Counter

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.errors import TooManyRequests


class ClientLimits:
    def __init__(self, rate: str | None, max_waiters: int | None) -> None:
        self._rate = parse(rate) if rate else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if rate else None
        self._max_waiters = max_waiters
        self._waiting: Counter[str] = Counter()

    async def hit(self, client: str) -> None:
        """Count one request of `client`; 429 if it is over its rate."""
        if self._limiter is None or self._rate is None:
            return
        if await self._limiter.hit(self._rate, client):
            return
        stats = await self._limiter.get_window_stats(self._rate, client)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"too many requests from this client (limit {self._rate}); retry in {retry} s",
            retry_after=retry,
        )

    def waiting(self, client: str) -> _WaiterSlot:
        """`with limits.waiting(client):` holds one of its waiter slots (429 if none)."""
        if self._max_waiters is not None and self._waiting[client] >= self._max_waiters:
            raise TooManyRequests(
                f"this client already holds {self._max_waiters} waiting requests",
                retry_after=2,
            )
        return _WaiterSlot(self._waiting, client)


class _WaiterSlot:
    """A class rather than a generator: it lives as long as an idle waiter does."""

    __slots__ = ("_client", "_counts")

    def __init__(self, counts: Counter[str], client: str) -> None:
        self._counts, self._client = counts, client

    def __enter__(self) -> None:
        self._counts[self._client] += 1

    def __exit__(self, *exc: object) -> None:
        self._counts[self._client] -= 1
        if not self._counts[self._client]:
            del self._counts[self._client]
