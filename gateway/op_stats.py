"""Live figures of one operation for `GET /v1/ops/{op}/stats`: its queue as RabbitMQ
sees it, and its recent jobs as the store has them (gateway/op_figures.py works those out).

The queue is asked with a passive `queue.declare`, on a channel of its own opened on the
broker's consumer connection: RabbitMQ blocks the publishing connection during an alarm
(the consuming one keeps answering), and a passive declare of a missing queue closes its
channel, which must never be the publisher's. No request waits on RabbitMQ longer than
`timeout`: a stalled broker gets `"queue": null` and a reason instead. An ask left waiting
on a stalled broker is the only one for its queue until it ends, so a paused RabbitMQ
does not pile up channels.

Each operation's answer is kept for `FRESH_SECONDS` and worked out once for everyone who
asks meanwhile: many open consoles cost one store read and one declare a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from gateway.broker import Broker
from gateway.link import CLOSE_TIMEOUT, LINK_ERRORS
from gateway.op_figures import op_figures
from gateway.store import JobStore
from gateway.types import JSONObject

WINDOW_SECONDS = 300
SAMPLE_LIMIT = 1000
FRESH_SECONDS = 1.0
GIVE_UP_SECONDS = 30.0
"""An ask still unanswered after this is dropped (its channel goes with its connection)."""


@dataclass(frozen=True, slots=True)
class QueueDepth:
    messages: int
    """Ready to deliver: waiting for a worker (not those delivered and not yet acked)."""
    consumers: int


class QueueStats:
    """Queue depths and consumer counts from RabbitMQ, each within `timeout` seconds."""

    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._asking: dict[str, tuple[asyncio.Task[QueueDepth | str], float]] = {}

    async def ask(self, queue: str) -> QueueDepth | str:
        """The queue's figures, or why RabbitMQ did not give them."""
        connection = self.broker.consumer.connection
        if connection is None:
            return "not connected to RabbitMQ"
        asking = self._asking.get(queue)
        if asking is None:
            task = asyncio.create_task(self._declare(connection, queue), name=f"stats-{queue}")
            asking = self._asking[queue] = (task, time.monotonic())
            task.add_done_callback(lambda done: self._asked(queue, done))
        task, since = asking
        # Not cancelled at the bound: the ask goes on (the next request may find its answer).
        await asyncio.wait((task,), timeout=max(since + self.timeout - time.monotonic(), 0))
        if task.done():
            return task.result()
        return f"RabbitMQ did not answer within {self.timeout:g} s (paused or overloaded?)"

    def _asked(self, queue: str, task: asyncio.Task[QueueDepth | str]) -> None:
        if self._asking.get(queue, (None, 0.0))[0] is task:
            del self._asking[queue]

    @staticmethod
    async def _declare(connection: AbstractConnection, queue: str) -> QueueDepth | str:
        try:
            async with asyncio.timeout(GIVE_UP_SECONDS):
                channel = await connection.channel(publisher_confirms=False)
                try:
                    underlay = await channel.get_underlay_channel()
                    ok = await underlay.queue_declare(queue, passive=True)
                finally:
                    if not channel.is_closed:
                        with contextlib.suppress(*LINK_ERRORS):
                            async with asyncio.timeout(CLOSE_TIMEOUT):
                                await channel.close()
        except ChannelNotFoundEntity:
            # The gateway declares every operation's queue when it connects: someone
            # deleted it since. Not zeros: publishes to it fail until it is back.
            return f"RabbitMQ has no queue {queue} (deleted since the gateway connected?)"
        except LINK_ERRORS as exc:
            return f"RabbitMQ did not answer ({type(exc).__name__}: {exc})"
        return QueueDepth(ok.message_count or 0, ok.consumer_count or 0)


class OpStats:
    """Each operation's figures, fresh for `FRESH_SECONDS`, worked out once at a time."""

    def __init__(self, broker: Broker, store: JobStore, *, timeout: float) -> None:
        self.queues = QueueStats(broker, timeout=timeout)
        self.store = store
        self._answers: dict[str, tuple[float, JSONObject]] = {}
        self._working: dict[str, asyncio.Task[JSONObject]] = {}

    async def of(self, op: str) -> JSONObject:
        """The figures of `op` (an operation with a contract: its queue has its name).
        Raises what the store raises (503 when it cannot serve)."""
        fresh = self._answers.get(op)
        if fresh is not None and time.monotonic() - fresh[0] < FRESH_SECONDS:
            return fresh[1]
        task = self._working.get(op)
        if task is None:
            task = self._working[op] = asyncio.create_task(self._work_out(op))
            task.add_done_callback(lambda done: self._worked_out(op, done))
        # Shielded: one caller going away does not take the others' answer with it.
        return await asyncio.shield(task)

    def _worked_out(self, op: str, task: asyncio.Task[JSONObject]) -> None:
        del self._working[op]
        if not task.cancelled() and task.exception() is None:  # (retrieved: never logged)
            self._answers[op] = (time.monotonic(), task.result())

    async def _work_out(self, op: str) -> JSONObject:
        now = time.time()
        queue, timings = await asyncio.gather(
            self.queues.ask(op),
            self.store.recent_timings(op, now - WINDOW_SECONDS, SAMPLE_LIMIT),
        )
        body: JSONObject = {"op": op}
        if isinstance(queue, QueueDepth):
            body["queue"] = {"name": op, "messages": queue.messages, "consumers": queue.consumers}
        else:
            body["queue"] = None
            body["queue_error"] = queue
        return body | op_figures(
            timings, now=now, window_seconds=WINDOW_SECONDS, limit=SAMPLE_LIMIT
        )
