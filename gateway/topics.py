"""Topic streams: messages any daemon publishes to `gateway.topics`, fanned out to many
subscribers, with replay.

RabbitMQ keeps each topic family's messages in one stream queue (retention from its
contract), so the stream is the truth, as the job store is for jobs: a message's `seq`
is its offset there, the same for every gateway instance, so a subscriber resumes
anywhere. Each process consumes each stream once (`TopicFeed`), checks every message
against its contract once, keeps a bounded ring of the recent ones, and rings the hub's
doorbell; subscribers follow it through the same `Follow` as a job's events
(gateway/follow.py), with this module's `TopicLog` in place of the job store.

A subscriber resuming from an offset older than the ring is caught up by a short-lived
stream consumer started at that offset (`CatchUp`), batch by batch, until it reaches what
the ring holds: no gap, no duplicate. Subscribers at the same offset share one catch-up
(after a restart, thousands resume from about the same place).

Before binding a stream, the gateway writes a marker into it (`TOPIC_MARKER_TYPE`), so a
stream's offset 0 is never a message: `after=0` means "everything", and a message's seq
is never 0. The marker also shows each feed where the stream stood when it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import aio_pika
import aiormq
import aiormq.abc
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from gateway.amqp import Acks
from gateway.broker import declare_or_refuse
from gateway.errors import ServiceUnavailable
from gateway.hub import Hub
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

FAN_OUT_INTERVAL = 0.02
"""Seconds: a topic's subscribers are woken at most this often (see `TopicLog._ring`)."""
STREAM_PREFETCH = 1000
"""Deliveries a stream consumer may hold unacked (RabbitMQ requires a limit for streams)."""
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
CATCH_UP_KEPT_SECONDS = 10.0
"""A catch-up consumer waits this long for its subscriber's next read, then closes."""
MAX_CATCH_UPS = 32
"""Catch-up consumers one process runs at once; more subscribers wait their turn."""
MAX_FAMILIES_REMEMBERED = 100_000
START_WAIT_SECONDS = 5.0
"""How long a subscriber waits for its feed to start (the broker link coming up)."""
MARKER_WAIT_SECONDS = 2.0
"""How long a subscriber with no `after` waits for the marker that says where "now" is."""


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


def _offset(delivery: aiormq.abc.DeliveredMessage) -> int | None:
    value = (delivery.header.properties.headers or {}).get(STREAM_OFFSET_HEADER)
    return value if isinstance(value, int) else None


def _ours(
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
                offset = _offset(delivery)
                if offset is None or offset <= self.after:
                    continue  # a chunk starts before the offset asked for
                self.after = offset
                if _ours(feed.registry, feed.contract, delivery):
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


class TopicLog:
    """The topic families' feeds, as `Follow` reads them (gateway/follow.py): by
    subscription (a topic), past a cursor. A `gateway.broker.Attachment`: declares the
    topology and consumes the streams on the broker link's consumer connection."""

    def __init__(
        self,
        registry: TopicRegistry,
        hub: Hub,
        metrics: Metrics,
        *,
        max_bytes: int,
        ring: int,
        publish_marker: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.registry = registry
        self.publish_marker = publish_marker
        """Writes a marker (message id) into a stream, confirmed (`Broker.publish_marker`)."""
        self.hub = hub
        self.metrics = metrics
        check = MessageCheck(metrics, max_bytes)
        self.feeds = {name: TopicFeed(c, registry, check, ring) for name, c in registry.items()}
        for feed in self.feeds.values():
            feed.on_message = functools.partial(self._ring, feed.contract.name)
        self._connection: AbstractConnection | None = None
        self._families: dict[str, TopicFeed] = {}
        self._to_wake: set[str] = set()
        self._wake_pending = False
        self._last_wake = 0.0
        self._reading: dict[tuple[str, int], asyncio.Future[tuple[list[TopicMessage], int]]] = {}
        """Catch-up reads in progress, by family and offset: shared by their subscribers."""
        self._kept: dict[tuple[str, int], CatchUp] = {}
        """Catch-ups between reads, by family and the offset they stopped at."""
        self._slots = asyncio.Semaphore(MAX_CATCH_UPS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_marker: dict[str, asyncio.Future[int]] = {}
        """Per family, the marker not yet written, which subscribers arriving now share."""

    def _ring(self, family: str, message: TopicMessage) -> None:
        """A new message: its key's subscribers, and its family's, are to be woken. Once
        for all the messages that come together: at once when the topic has been quiet,
        else at most every `FAN_OUT_INTERVAL` (many messages a second to many subscribers
        then cost a wake-up and a write per subscriber per interval, not per message)."""
        self.metrics.topic_messages.labels(family, "delivered").inc()
        self._to_wake.add(message.topic)
        self._to_wake.add(family)
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = asyncio.get_running_loop()
        delay = self._last_wake + FAN_OUT_INTERVAL - loop.time()
        if delay > 0:
            loop.call_later(delay, self._wake)
        else:
            loop.call_soon(self._wake)

    def _wake(self) -> None:
        topics, self._to_wake = self._to_wake, set()
        self._wake_pending = False
        self._last_wake = asyncio.get_running_loop().time()
        for topic in topics:
            self.hub.notify(topic)

    # -- the Follow side ----------------------------------------------------------------

    def _feed(self, subscription: str) -> TopicFeed:
        """The feed of a subscription's family (remembered: every wake-up of every
        subscriber asks)."""
        feed = self._families.get(subscription)
        if feed is None:
            feed = self.feeds[self.registry.for_topic(subscription).name]
            if len(self._families) >= MAX_FAMILIES_REMEMBERED:
                self._families.clear()
            self._families[subscription] = feed
        return feed

    async def _started(self, feed: TopicFeed) -> None:
        if feed.started.is_set():
            return
        try:
            async with asyncio.timeout(START_WAIT_SECONDS):
                await feed.started.wait()
        except TimeoutError:
            raise ServiceUnavailable(
                "the message broker is not reachable", code="broker_unavailable"
            ) from None

    async def position(self, subscription: str) -> int:
        """Where a subscriber that gave no `after` starts: past every message published
        (confirmed) before it asked. The feed may not have seen all of those yet, so a
        marker is written into the stream and its offset is the answer; subscribers who
        arrive before it is written share it. If RabbitMQ cannot take it (an alarm), the
        feed's own position, which may be a moment behind."""
        feed = self._feed(subscription)
        await self._started(feed)
        name = feed.contract.name
        marker = self._next_marker.get(name)
        if marker is None:
            marker = self._next_marker[name] = asyncio.get_running_loop().create_future()
            self._spawn(self._write_marker(feed, marker))
        try:
            async with asyncio.timeout(MARKER_WAIT_SECONDS):
                return await asyncio.shield(marker)
        except (TimeoutError, ServiceUnavailable):
            return feed.last

    @contextlib.contextmanager
    def sighting(self, family: str, message_id: str) -> Iterator[asyncio.Future[int]]:
        """`with log.sighting(name, id) as seen:` a message about to be published under
        `message_id`: `seen` gets its offset once this process's feed has it."""
        feed = self.feeds[family]
        seen = feed.sightings[message_id] = asyncio.get_running_loop().create_future()
        try:
            yield seen
        finally:
            feed.sightings.pop(message_id, None)

    async def _write_marker(self, feed: TopicFeed, marker: asyncio.Future[int]) -> None:
        name = feed.contract.name
        if self._next_marker.get(name) is marker:
            del self._next_marker[name]  # written from now on: later arrivals need another
        message_id = secrets.token_hex(8)
        feed.sightings[message_id] = marker
        try:
            await self.publish_marker(topic_stream(name), message_id)
            # Seen by the feed at once, normally; if never (a reconnect), let it go.
            asyncio.get_running_loop().call_later(60, feed.sightings.pop, message_id, None)
        except Exception as exc:
            feed.sightings.pop(message_id, None)
            if not marker.done():
                marker.set_exception(exc)
            marker.exception()  # retrieved: its waiters may have given up already

    async def read(self, subscription: str, after: int) -> tuple[list[TopicMessage], int, bool]:
        """The messages for `subscription` past `after`; the cursor to go on from (past
        the messages of other keys it skipped, too); whether that was all (a catch-up
        hands out a batch: the rest is read at once)."""
        feed = self._feed(subscription)
        await self._started(feed)
        if after >= feed.ring_floor:
            return feed.since(subscription, after), max(after, feed.last), True
        key = (feed.contract.name, after)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self._read_old(feed, after))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        # Shielded: the others reading along go on if this subscriber leaves.
        found, cursor = await asyncio.shield(reading)
        mine = [m for m in found if subscribed(subscription, feed.contract, m.topic)]
        return mine, cursor, False

    async def ended(self, subscription: str, cursor: int) -> bool:
        return False  # a topic has no end

    # -- catch-ups ----------------------------------------------------------------------

    async def _read_old(self, feed: TopicFeed, after: int) -> tuple[list[TopicMessage], int]:
        """One batch from the stream past `after`, by the catch-up kept at `after` or a
        new one (which waits for one of the `MAX_CATCH_UPS` slots)."""
        key = (feed.contract.name, after)
        catch_up = self._kept.pop(key, None)
        if catch_up is None:
            catch_up = await self._open(feed, after)
        try:
            found = await catch_up.read()
        except BaseException:
            await self._close(catch_up)
            raise
        if catch_up.done:
            await self._close(catch_up)
        else:
            self._keep(catch_up)
        return found, catch_up.after

    async def _open(self, feed: TopicFeed, after: int) -> CatchUp:
        await self._slots.acquire()
        catch_up = CatchUp(feed, after)
        try:
            connection = self._connection
            if connection is None or connection.is_closed:
                raise ServiceUnavailable(
                    "the message broker is not reachable", code="broker_unavailable"
                )
            await catch_up.open(connection)
        except BaseException:
            await self._close(catch_up)
            raise
        return catch_up

    def _keep(self, catch_up: CatchUp) -> None:
        """Keep it, for a while, for the read that goes on from where it stopped."""
        key = (catch_up.feed.contract.name, catch_up.after)
        old = self._kept.pop(key, None)
        if old is not None:
            self._close_soon(old)
        self._kept[key] = catch_up
        asyncio.get_running_loop().call_later(CATCH_UP_KEPT_SECONDS, self._expire, key, catch_up)

    def _expire(self, key: tuple[str, int], catch_up: CatchUp) -> None:
        if self._kept.get(key) is catch_up:
            del self._kept[key]
            self._close_soon(catch_up)

    def _close_soon(self, catch_up: CatchUp) -> None:
        self._spawn(self._close(catch_up))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # held, so none is collected early
        task.add_done_callback(self._tasks.discard)

    async def _close(self, catch_up: CatchUp) -> None:
        try:
            await catch_up.close()
        finally:
            self._slots.release()

    # -- the broker side ----------------------------------------------------------------

    async def attach_publisher(self, channel: AbstractChannel) -> None:
        pass  # messages from HTTP go through the broker's confirmed publisher

    async def attach_consumer(
        self, connection: AbstractConnection, channel: AbstractChannel
    ) -> None:
        """Declare the exchange and each family's stream, and consume each stream."""
        self._connection = connection
        if not self.feeds:
            return
        exchange = await channel.declare_exchange(
            TOPICS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for name, feed in self.feeds.items():
            stream = topic_stream(name)
            await declare_or_refuse(
                connection,
                stream,
                feed.contract.settings.stream_arguments(),
                f"the stream {stream} exists with other settings than its topic contract "
                f"asks for ({{reason}}); delete it (its messages go with it), or restore "
                f"the setting",
            )
            await self._mark(connection, stream)
            queue = await channel.get_queue(stream, ensure=False)
            await queue.bind(exchange, routing_key=name)
            await queue.bind(exchange, routing_key=f"{name}.#")
            await self._consume(connection, feed)

    async def _mark(self, connection: AbstractConnection, stream: str) -> None:
        """Write a marker into the stream, confirmed, before it is bound (see above)."""
        channel = await connection.channel(publisher_confirms=True)
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(b"", type=TOPIC_MARKER_TYPE, message_id=secrets.token_hex(8)),
                routing_key=stream,
            )
        finally:
            await channel.close()

    async def _consume(self, connection: AbstractConnection, feed: TopicFeed) -> None:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)
        await underlay.basic_qos(prefetch_count=STREAM_PREFETCH)
        acks = Acks(underlay)

        def on_delivery(delivery: aiormq.abc.DeliveredMessage) -> None:
            tag = delivery.delivery_tag
            assert tag is not None
            offset = _offset(delivery)
            if offset is not None and offset > feed.last:
                properties = delivery.header.properties
                message = (
                    feed.check(feed.contract, delivery, offset)
                    if properties.message_type != TOPIC_MARKER_TYPE
                    and _ours(feed.registry, feed.contract, delivery)
                    else None
                )
                feed.take(offset, message, properties.message_id)
            acks.opened(tag)
            acks.handled(tag)  # acks only pace a stream's deliveries: nothing to settle

        async def consume(delivery: aiormq.abc.DeliveredMessage) -> None:
            on_delivery(delivery)

        await underlay.basic_consume(
            topic_stream(feed.contract.name),
            consume,
            arguments={STREAM_OFFSET_HEADER: feed.resume_offset()},
        )

    def reconnected(self) -> None:
        pass  # each feed resumes past the last offset it saw
