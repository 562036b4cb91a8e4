"""Topic streams: messages any daemon publishes to `gateway.topics`, fanned out to many
subscribers, with replay.

RabbitMQ keeps each topic family's messages in one stream queue (retention from its
contract), so the stream is the truth, as the job store is for jobs: a message's `seq`
is its offset there, the same for every gateway instance, so a subscriber resumes
anywhere. Each process consumes each stream once (`TopicFeed`, in gateway/topic_feed.py),
checks every message against its contract once, keeps a bounded ring of the recent
ones, and rings the hub's doorbell; subscribers follow it through the same `Follow` as a
job's events (gateway/follow.py), with this module's `TopicLog` in place of the job store.

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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection

from gateway.amqp import Acks
from gateway.broker import declare_or_refuse
from gateway.errors import ServiceUnavailable
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.topic_contracts import TopicRegistry
from gateway.topic_feed import (
    CatchUp,
    MessageCheck,
    TopicFeed,
    TopicMessage,
    offset_of,
    published_for,
    subscribed,
)
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
CATCH_UP_KEPT_SECONDS = 10.0
"""A catch-up consumer waits this long for its subscriber's next read, then closes."""
MAX_CATCH_UPS = 32
"""Catch-up consumers one process runs at once; more subscribers wait their turn."""
MAX_FAMILIES_REMEMBERED = 100_000
START_WAIT_SECONDS = 5.0
"""How long a subscriber waits for its feed to start (the broker link coming up)."""
MARKER_WAIT_SECONDS = 2.0
"""How long a subscriber with no `after` waits for the marker that says where "now" is."""


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
            offset = offset_of(delivery)
            if offset is not None and offset > feed.last:
                properties = delivery.header.properties
                message = (
                    feed.check(feed.contract, delivery, offset)
                    if properties.message_type != TOPIC_MARKER_TYPE
                    and published_for(feed.registry, feed.contract, delivery)
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
