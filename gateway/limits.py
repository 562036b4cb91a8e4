"""Per-client limits: a request rate (moving window, via the `limits` library) and a
share of the waiting requests, so that no one client can hold every waiter slot of the
process and lock the others out. A client is its token's subject, or its address when
auth is off (see `gateway.http.access.client_key`). Over a limit: 429 with Retry-After."""

from __future__ import annotations

import math
import time
from collections import Counter

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.errors import TooManyRequests

WAITER_RETRY_SECONDS = 2


class ClientLimits:
    def __init__(
        self, rate: str | None, max_waiters_per_client: int | None, max_waiters: int
    ) -> None:
        """`max_waiters_per_client`: None for the fair share (see `waiter_share`), 0 for no
        per-client limit, N for at most N each. `max_waiters`: the process's own cap."""
        self._rate = parse(rate) if rate else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if rate else None
        self._per_client = max_waiters_per_client
        self._max_waiters = max_waiters
        self._waiting: Counter[str] = Counter()
        self._held = 0  # every client's slots together: the share needs it in O(1)

    @property
    def rated(self) -> bool:
        """Whether requests are counted against a rate at all (`hit` does nothing if not)."""
        return self._limiter is not None

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

    def waiter_share(self, client: str) -> int | None:
        """How many waiter slots `client` may hold now (None: no per-client limit).

        By default, half of what the other clients leave free: a lone client gets half of
        the process's slots, a second half of the rest, and so on, so a newcomer always
        finds some, however greedy the clients before it; and greedy clients settle at a
        third each, not at all of it. An explicit per-client limit is a static cap."""
        if self._per_client is not None:
            return self._per_client or None
        held_by_others = self._held - self._waiting.get(client, 0)
        return max(1, (self._max_waiters - held_by_others) // 2)

    def waiting(self, client: str) -> WaiterSlot:
        """`with limits.waiting(client):` holds one of its waiter slots (429 if none)."""
        share = self.waiter_share(client)
        if share is not None and self._waiting.get(client, 0) >= share:
            raise TooManyRequests(
                f"this client already holds {self._waiting[client]} waiting requests, "
                f"its share of this gateway's {self._max_waiters}",
                retry_after=WAITER_RETRY_SECONDS,
            )
        return WaiterSlot(self, client)


class WaiterSlot:
    """One waiter slot of a client, checked when made, held from `with` to its end. A
    class rather than a generator: it lives as long as an idle waiter does."""

    __slots__ = ("_client", "_limits")

    def __init__(self, limits: ClientLimits, client: str) -> None:
        self._limits, self._client = limits, client

    def __enter__(self) -> None:
        self._limits._waiting[self._client] += 1
        self._limits._held += 1

    def __exit__(self, *exc: object) -> None:
        limits = self._limits
        limits._held -= 1
        limits._waiting[self._client] -= 1
        if not limits._waiting[self._client]:
            del limits._waiting[self._client]
