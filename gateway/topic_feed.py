"""One process's view of one topic family's stream: the messages as subscribers get them
(`TopicMessage`), checked against their contract once (`MessageCheck`), the live feed with
its ring of recent messages (`TopicFeed`), and the short-lived consumers that catch up a
subscriber from further back than the ring (`CatchUp`). gateway/topics.py puts them
together for `Follow`, and on the broker link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import aiormq
import aiormq.abc
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from gateway.errors import ServiceUnavailable
from gateway.jobs import isoformat
from gateway.link import LINK_ERRORS
from gateway.metrics import Metrics
from gateway.topic_contracts import TopicContract, TopicRegistry
from gateway.types import JSON, JSONObject
from gateway.wire import (
    STREAM_OFFSET_HEADER,
    TOPIC_MARKER_TYPE,
    TOPICS_EXCHANGE,
    topic_stream,
)

log = logging.getLogger("gateway.topics")

RING_BYTES = 16 * 1024 * 1024
"""At most this much message JSON in one feed's ring, whatever its message count."""
CATCH_UP_BATCH = 500
"""Messages one catch-up read hands out at most (the next read goes on from there)."""
CATCH_UP_QUIET_SECONDS = 5.0
"""A catch-up consumer that delivers nothing for this long has reached the stream's end
(retention dropped what it was after): its subscriber goes on from the ring."""
CHANNEL_CHECK_SECONDS = 0.5
"""How often a waiting catch-up looks whether its channel is still open."""
CATCH_UP_PAUSE_SECONDS = 0.1
"""A catch-up consumer that has messages in hand and gets no more for this long hands
them out (the stream delivers chunk by chunk; the next read goes on from there)."""


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """One message of a topic, as subscribers get it."""

    seq: int
    """Its offset in the topic family's stream."""
    topic: str
    """The topic it was published to (a key of the family, or the family's name)."""
    data: JSON
    time: float
    size: int
    """Its JSON's size in bytes (what it costs the ring)."""
    frame: bytes
    """Its Server-Sent Events frame, made once for all its subscribers."""
    type: ClassVar[str] = "message"

    def to_json(self) -> JSONObject:
        return {
            "seq": self.seq,
            "type": "message",
            "time": isoformat(self.time),
            "topic": self.topic,
            "data": self.data,
        }


def subscribed(subscription: str, contract: TopicContract, topic: str) -> bool:
    """Whether a message published to `topic` is for a subscriber of `subscription`: the
    family's name subscribes to every key of it, a key to itself only."""
    return topic == subscription or subscription == contract.name


class TopicFeed:
    """One process's view of one topic family's stream: a live consumer from where the
    stream stood at start, and a ring of the recent valid messages.

    Every offset in (`floor`, `last`] has been seen; the ring holds the valid messages
    among offsets (`ring_floor`, `last`], in order."""

    def __init__(
        self, contract: TopicContract, registry: TopicRegistry, check: MessageCheck, ring: int
    ) -> None:
        self.contract = contract
        self.registry = registry
        self.check = check
        self.ring_messages = ring
        self.ring: deque[TopicMessage] = deque()
        self.ring_bytes = 0
        self.ring_floor = -1
        self.last = -1
        self.started = asyncio.Event()
        self.sightings: dict[str, asyncio.Future[int]] = {}
        """Messages this process published and waits to see (markers written to find
        where the stream stands, messages published over HTTP), by message id: their
        offset once the feed has seen them."""
        self.on_message: Callable[[TopicMessage], None] = lambda message: None
        """Called with each new valid message, once it is in the ring."""

    def resume_offset(self) -> int | str:
        """Where the live consumer (re)starts: past what it has seen, so a reconnect
        leaves no gap; on first start, the last chunk (which holds the marker just
        written, so the first delivery comes at once)."""
        return self.last + 1 if self.started.is_set() else "last"

    def take(
        self, offset: int, message: TopicMessage | None, message_id: str | None = None
    ) -> None:
        """A delivery of the live consumer: `message` if it is a valid message of this
        family, else None (a marker, a message off its contract); with its message id."""
        if offset <= self.last:
            return  # a redelivery after a reconnect, or the chunk's head before it
        if not self.started.is_set():
            self.ring_floor = offset - 1
            self.started.set()
        self.last = offset
        if message_id is not None and self.sightings:
            seen = self.sightings.pop(message_id, None)
            if seen is not None and not seen.done():
                seen.set_result(offset)
        if message is None:
            return
        self.ring.append(message)
        self.ring_bytes += message.size
        while len(self.ring) > self.ring_messages or self.ring_bytes > RING_BYTES:
            dropped = self.ring.popleft()
            self.ring_bytes -= dropped.size
            self.ring_floor = dropped.seq
        self.on_message(message)

    def since(self, subscription: str, after: int) -> list[TopicMessage]:
        """The ring's messages past `after` for `subscription` (after >= ring_floor)."""
        found: list[TopicMessage] = []
        for message in reversed(self.ring):  # the usual reader is one message behind
            if message.seq <= after:
                break
            if subscribed(subscription, self.contract, message.topic):
                found.append(message)
        found.reverse()
        return found


class MessageCheck:
    """A delivery from a stream turned into a `TopicMessage`, or refused (counted, and
    logged without its body): not JSON, too large, or off its contract."""

    def __init__(self, metrics: Metrics, max_bytes: int) -> None:
        self.metrics = metrics
        self.max_bytes = max_bytes

    def __call__(
        self, contract: TopicContract, delivery: aiormq.abc.DeliveredMessage, offset: int
    ) -> TopicMessage | None:
        properties = delivery.header.properties
        if properties.message_type == TOPIC_MARKER_TYPE:
            return None
        topic = delivery.routing_key or ""
        name = contract.name
        body = delivery.body
        if len(body) > self.max_bytes:
            log.warning(
                "topic %s: message at offset %d of %d bytes dropped", name, offset, len(body)
            )
            self.metrics.topic_messages.labels(name, "too_large").inc()
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("topic %s: message at offset %d is not JSON; dropped", name, offset)
            self.metrics.topic_messages.labels(name, "malformed").inc()
            return None
        details = contract.message_errors(data)
        if details:
            log.warning(
                "topic %s: message at offset %d off its contract (at %s); dropped",
                topic,
                offset,
                ", ".join(d["path"] or "/" for d in details),
            )
            self.metrics.topic_messages.labels(name, "invalid").inc()
            return None
        stamp = properties.timestamp
        return TopicMessage(
            seq=offset,
            topic=topic,
            data=data,
            time=stamp.timestamp() if stamp is not None else time.time(),
            size=len(body),
            # One line of data whatever the daemon sent: orjson writes no newlines.
            frame=b"id: %d\r\nevent: message\r\ndata: %b\r\n\r\n" % (offset, orjson.dumps(data)),
        )


def offset_of(delivery: aiormq.abc.DeliveredMessage) -> int | None:
    value = (delivery.header.properties.headers or {}).get(STREAM_OFFSET_HEADER)
    return value if isinstance(value, int) else None


def published_for(
    registry: TopicRegistry, contract: TopicContract, delivery: aiormq.abc.DeliveredMessage
) -> bool:
    """Published to the topic exchange for this family (a family nested in another,
    `chat` and `chat.room`, is in both streams: each message belongs to the longest)."""
    if delivery.exchange != TOPICS_EXCHANGE:
        return False
    return registry.lookup(delivery.routing_key or "") is contract


class CatchUp:
    """A short-lived consumer of one stream from an offset, read batch by batch."""

    def __init__(self, feed: TopicFeed, after: int) -> None:
        self.feed = feed
        self.after = after
        """Every offset up to this one has been read (or skipped)."""
        self.done = False
        """It has reached what the ring holds: read on from there."""
        self._deliveries: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
        self._channel: AbstractChannel | None = None

    async def open(self, connection: AbstractConnection) -> None:
        self._channel = await connection.channel()
        underlay = await self._channel.get_underlay_channel()
        await underlay.basic_qos(prefetch_count=CATCH_UP_BATCH)
        await underlay.basic_consume(
            topic_stream(self.feed.contract.name),
            self._deliveries.put,
            arguments={STREAM_OFFSET_HEADER: self.after + 1},
        )

    async def read(self) -> list[TopicMessage]:
        """The next batch of valid messages of the family past `after`."""
        feed = self.feed
        found: list[TopicMessage] = []
        last_tag = None
        try:
            while len(found) < CATCH_UP_BATCH:
                # Deliveries come chunk by chunk: a pause with some in hand hands them
                # out (the next read goes on); a long silence is the stream's end.
                delivery = await self._next(
                    CATCH_UP_PAUSE_SECONDS if found else CATCH_UP_QUIET_SECONDS
                )
                if delivery is None:
                    if found:
                        break
                    # Nothing more in the stream: what it was after is gone (retention).
                    self.after = max(self.after, feed.ring_floor)
                    self.done = True
                    break
                last_tag = delivery.delivery_tag
                offset = offset_of(delivery)
                if offset is None or offset <= self.after:
                    continue  # a chunk starts before the offset asked for
                self.after = offset
                if published_for(feed.registry, feed.contract, delivery):
                    message = feed.check(feed.contract, delivery, offset)
                    if message is not None:
                        found.append(message)
                if offset > feed.ring_floor:
                    self.done = True  # the ring has everything past this
                    break
        finally:
            channel = self._channel
            if last_tag is not None and channel is not None and not channel.is_closed:
                underlay = await channel.get_underlay_channel()
                with contextlib.suppress(*LINK_ERRORS):
                    await underlay.basic_ack(last_tag, multiple=True)
        return found

    async def _next(self, timeout: float) -> aiormq.abc.DeliveredMessage | None:
        """The next delivery, or None after `timeout` seconds without one; 503 if the
        channel is gone meanwhile (a lost connection is not the stream's end)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            channel = self._channel
            if self._deliveries.empty() and (channel is None or channel.is_closed):
                raise ServiceUnavailable(
                    "the message broker is not reachable", code="broker_unavailable"
                )
            try:
                async with asyncio.timeout(min(deadline - loop.time(), CHANNEL_CHECK_SECONDS)):
                    return await self._deliveries.get()
            except TimeoutError:
                if loop.time() >= deadline:
                    return None

    async def close(self) -> None:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*LINK_ERRORS):
                await channel.close()
