"""The link to RabbitMQ: the topology the gateway owns, confirmed publishing, the consumers
that bring workers' answers and dead letters back, and whether RabbitMQ takes publishes.

Two connections, as RabbitMQ advises: one publishes (requests, cancel notices, notices to
other instances), one consumes (answers, dead letters, this instance's replies). During a
memory or disk alarm RabbitMQ blocks the connections that publish; answers keep coming in,
and being acked, on the other.

Each connection is set up afresh after a loss — channels, queues, consumers — instead of
being restored by aio-pika's robust connection, which after a broker restart sometimes
came back without its consumers (tests/test_restarts.py counts them with rabbitmqctl).

A request never hangs on RabbitMQ: while a connection is down, and while RabbitMQ stalls
(blocked by an alarm, or a confirm overdue: gateway/stall.py), `check_publishable` fails
at once with 503, and a probe publish finds out when RabbitMQ takes messages again.

The per-request path (a publish and its confirm, an answer and its ack) runs on aiormq's
channels under aio-pika's, without aio-pika's message objects and extra tasks; the
publishes and the acks of one turn of the event loop go out in one socket write each
(gateway/amqp.py). Every publish still waits for its own confirm, and every answer is acked
only once its handler has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import aiormq
import aiormq.abc
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
)
from aio_pika.exceptions import (
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from pamqp.commands import Basic

from gateway.amqp import Acks, ConfirmedPublisher, InOrder
from gateway.contracts import Contract, ContractRegistry
from gateway.errors import ServiceUnavailable
from gateway.link import LINK_ERRORS, Link, TopologyRefused, blocked
from gateway.stall import StallWatch
from gateway.trace_context import TraceContext
from gateway.trust import broker_user
from gateway.types import JSONObject
from gateway.wire import (
    ANSWERS_QUEUE,
    CANCEL_EXCHANGE,
    CANCEL_TYPE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    HEADER_ATTEMPT,
    HEADER_DEADLINE,
    HEADER_LEASE_SECONDS,
    PROBE_ROUTING_KEY,
    STORE_MARKER_QUEUE,
    TOPIC_MARKER_TYPE,
    TOPICS_EXCHANGE,
)

log = logging.getLogger("gateway.broker")

MAX_MESSAGE_TTL_SECONDS = (2**32 - 1) / 1000
NOT_PERSISTENT, PERSISTENT = 1, 2  # AMQP delivery modes
PROBE_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class Answer:
    """A worker's answer, or a dead-lettered request, as the gateway needs it."""

    job_id: str | None
    type: str | None
    body: bytes
    headers: JSONObject
    redelivered: bool = False
    """RabbitMQ delivered it before, to a consumer that did not ack it (one that died)."""
    user_id: str | None = None
    """The AMQP `user_id` property: when present, RabbitMQ has checked it is the broker
    user that published the message (gateway/trust.py)."""


AnswerHandler = Callable[[Answer], Awaitable[None]]


class Attachment(Protocol):
    """Something more that rides on the broker link (peer notices): called on every new
    connection, to consume on the consumer side and publish on the publisher side."""

    async def attach_consumer(
        self, connection: AbstractConnection, channel: AbstractChannel
    ) -> None: ...

    async def attach_publisher(self, channel: AbstractChannel) -> None: ...

    def reconnected(self) -> None:
        """Messages may have been missed while disconnected."""


def queue_arguments(contract: Contract) -> JSONObject:
    settings = contract.settings
    args: JSONObject = {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-max-length": settings.max_queue_length,
        "x-overflow": "reject-publish",
    }
    if settings.durability == "durable":
        args["x-queue-type"] = "quorum"
    return args


async def declare_or_refuse(
    connection: AbstractConnection, name: str, arguments: dict[str, Any], refusal: str
) -> None:
    """Declare a durable queue on a channel of its own (a refusal closes the channel);
    `refusal` (with `{reason}`) says what to do if it exists with other arguments."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        raise TopologyRefused(refusal.format(reason=exc)) from exc
    finally:
        if not channel.is_closed:
            await channel.close()


async def declare_dead_letters(channel: AbstractChannel) -> AbstractQueue:
    """The dead-letter exchange every operation queue names, and the queue behind it."""
    dlx = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx)
    return dead


async def declare_operation_queue(connection: AbstractConnection, contract: Contract) -> None:
    """The durable queue `<op>` of an operation, with its contract's arguments."""
    await declare_or_refuse(
        connection,
        contract.op,
        queue_arguments(contract),
        f"the queue {contract.op} exists with other settings than its contract "
        f"asks for ({{reason}}); delete it once drained, or restore the setting",
    )


def cancel_notice(job_id: str, op: str, user: str | None) -> aio_pika.Message:
    """The notice to workers that a job was cancelled (docs/workers.md, "Cancellation"),
    published to the cancel exchange by `user`, the gateway's broker user."""
    return aio_pika.Message(
        orjson.dumps({"job_id": job_id, "op": op}),
        content_type="application/json",
        correlation_id=job_id,
        type=CANCEL_TYPE,
        user_id=user,
    )


async def declare_cancel_exchange(channel: AbstractChannel) -> AbstractExchange:
    """The fanout of cancel notices to workers."""
    return await channel.declare_exchange(
        CANCEL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )


class Broker:
    def __init__(
        self,
        url: str,
        contracts: ContractRegistry,
        *,
        store_identity: Callable[[], str],
        on_answer: AnswerHandler,
        on_dead_letter: AnswerHandler,
        publish_timeout: float = 5.0,
        stall_after: float = 2.0,
        prefetch: int = 256,
        reconnect_interval: float = 1.0,
        attachments: Sequence[Attachment] = (),
    ) -> None:
        # Several addresses (a cluster), separated by commas or spaces, tried in turn.
        urls = url.replace(",", " ").split()
        self.contracts = contracts
        self.store_identity = store_identity
        self.on_answer = on_answer
        self.on_dead_letter = on_dead_letter
        self.publish_timeout = publish_timeout
        self.prefetch = prefetch
        self.attachments = list(attachments)
        self.instance = secrets.token_hex(4)
        # Stamped on what the gateway publishes; RabbitMQ refuses it from anyone else, so a
        # dead letter carrying it is a request the gateway really published.
        self.user = broker_user(url)
        self.publisher = Link(
            "publisher", urls, self._set_up_publisher, reconnect_interval, self._changed
        )
        self.consumer = Link(
            "consumer", urls, self._set_up_consumer, reconnect_interval, self._changed
        )
        self.stall = StallWatch(stall_after, blocked=lambda: blocked(self.publisher.connection))
        self._ready = asyncio.Event()
        # The confirmed channel (aio-pika's, held so it stays open), and the publisher on
        # aiormq's channel under it.
        self._channel: AbstractChannel | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._cancel_exchange: AbstractExchange | None = None
        self._probing: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Light operations' answers come back to this instance alone (their jobs live in
        # its memory), through a queue of its own that needs no disk, named anew on every
        # connection: the node the old one lived on may be the one that is gone. None
        # while no such queue is being consumed: never a name RabbitMQ would invent.
        self.reply_queue: str | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Both connections up, with the topology declared (afresh after a reconnect)."""
        return self._ready.is_set()

    @property
    def problem(self) -> str | None:
        """Why RabbitMQ cannot be used now, in words for /readyz; None when it can."""
        refused = self.consumer.refused or self.publisher.refused
        if refused is not None:
            return refused
        if not self.ready:
            return "not connected to RabbitMQ"
        if self.stall.check():
            return "RabbitMQ is not confirming publishes (paused, or blocked by an alarm)"
        return None

    def healthy_since(self) -> float | None:
        """Since when (epoch seconds) RabbitMQ has been reachable and taking publishes;
        None while it is not."""
        if not self.ready or self.stall.check():
            return None
        return max(self.publisher.up_since, self.consumer.up_since, self.stall.healthy_since)

    def _changed(self) -> None:
        if self.publisher.up.is_set() and self.consumer.up.is_set():
            if not self._ready.is_set():
                self._ready.set()
                for attachment in self.attachments:
                    attachment.reconnected()
        else:
            self._ready.clear()
        if not self.consumer.up.is_set():
            self.reply_queue = None  # went with the connection (exclusive)

    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def check_publishable(self) -> None:
        """503 at once unless RabbitMQ is connected and taking publishes."""
        problem = self.problem
        if problem is None:
            return
        stalled = self.ready and self.consumer.refused is None
        raise ServiceUnavailable(
            "the message broker is not taking requests now"
            + (" (it stopped confirming them)" if stalled else ""),
            code="broker_stalled" if stalled else "broker_unavailable",
            retry_after=2 if stalled else 1,
        )

    async def probe(self) -> bool:
        """Is RabbitMQ taking publishes right now? Publishes a message that routes nowhere
        and waits (at most the stall threshold) for its confirm. Shared by concurrent
        callers; skipped when a publish was confirmed within the threshold."""
        if not self.ready:
            return False
        if self.stall.check():
            return False
        if self.stall.idle_for() < self.stall.overdue_after:
            return True
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe_once())
        with contextlib.suppress(Exception):
            await asyncio.shield(self._probing)
        return not self.stall.check()

    async def _probe_once(self) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        # Through the publisher (nothing else may publish on its channel). Its own id:
        # returns are matched by message id (this one, not mandatory, never returns).
        properties = Basic.Properties(
            delivery_mode=NOT_PERSISTENT, priority=0, message_id=secrets.token_hex(16)
        )
        try:
            with self.stall.call():
                await publisher.publish(
                    b"",
                    PROBE_ROUTING_KEY,
                    properties,
                    mandatory=False,
                    timeout=self.stall.overdue_after,
                )
        except TimeoutError:
            self.stall.mark()
        except LINK_ERRORS:
            pass  # the link is going down: its own state says so

    async def _probe_while_stalled(self) -> None:
        """While stalled, probe until a confirm comes back (then the stall is over)."""
        while True:
            await self.stall.stalled.wait()
            if self.publisher.up.is_set() and not self.stall.blocked():
                await self._probe_once()
            if self.stall.stalled.is_set():
                await asyncio.sleep(PROBE_INTERVAL)
            else:
                log.info("RabbitMQ confirms publishes again")

    # -- connections ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; the gateway serves (with 503s) meanwhile."""
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="broker-publisher"),
            asyncio.create_task(self.consumer.run(), name="broker-consumer"),
            asyncio.create_task(self._probe_while_stalled(), name="broker-probe"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _set_up_publisher(self, connection: AbstractConnection) -> None:
        self._channel, self._publisher = None, None
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # Notices to workers and to other instances are fire-and-forget: no confirms.
        notices = await connection.channel(publisher_confirms=False)
        self._cancel_exchange = await declare_cancel_exchange(notices)
        for attachment in self.attachments:
            await attachment.attach_publisher(notices)
        publishing = await channel.get_underlay_channel()
        assert isinstance(publishing, aiormq.Channel)  # its confirm bookkeeping is shared
        self._publisher, self._channel = ConfirmedPublisher(publishing), channel

    async def _set_up_consumer(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        await self._declare(connection, channel)
        # This instance's own queues, on channels of their own: the replies' alone, as
        # its acks may cover every unacked delivery of its channel (`Acks`).
        replying = await connection.channel()
        await replying.set_qos(prefetch_count=self.prefetch)
        # Named by us, declared once per connection, set as `reply_to` only once consumed.
        name = f"gateway.replies.{secrets.token_hex(8)}"
        replies = await replying.declare_queue(name, exclusive=True, auto_delete=True)
        await self._consume(
            replies,
            Acks(await replying.get_underlay_channel()),
            self.on_answer,
            self._tag("replies"),
        )
        self.reply_queue = name
        own = await connection.channel()
        await own.set_qos(prefetch_count=self.prefetch)
        for attachment in self.attachments:
            await attachment.attach_consumer(connection, own)
        log.info("connected to RabbitMQ, topology declared for %d operations", len(self.contracts))

    def _tag(self, what: str) -> str:
        """Consumer tags that say whose consumer it is (`rabbitmqctl list_consumers`)."""
        return f"gateway.{self.instance}.{what}.{secrets.token_hex(4)}"

    async def _declare(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        # RabbitMQ refuses to declare a queue again with other arguments. This queue holds
        # nothing (and its dead-letter exchange need not exist): its arguments name the
        # job store, which pins this virtual host to the gateways of one store. Another
        # store's gateway would take their answers and drop them as unknown.
        store = self.store_identity()
        await declare_or_refuse(
            connection,
            STORE_MARKER_QUEUE,
            {
                "x-queue-type": "quorum",  # there while a majority of a cluster's nodes is
                "x-max-length": 0,
                "x-dead-letter-exchange": f"{STORE_MARKER_QUEUE}.{store}",
            },
            f"this RabbitMQ virtual host belongs to gateways of another job store (this "
            f"one's is {store}). Gateways sharing a virtual host must share one store: "
            f"use another virtual host, or if that store is retired and "
            f"{ANSWERS_QUEUE} drained, delete the queue {STORE_MARKER_QUEUE}",
        )
        dead = await declare_dead_letters(channel)
        for contract in self.contracts.values():
            await declare_operation_queue(connection, contract)
        # One consumer at a time takes answers (the others stand by): one job's answers
        # are stored in the order its worker sent them, even with many instances.
        answers_arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
        }
        await declare_or_refuse(
            connection,
            ANSWERS_QUEUE,
            answers_arguments,
            f"the queue {ANSWERS_QUEUE} exists with other arguments ({{reason}}), made by "
            f"an older gateway: stop the gateways, let it drain, delete it and start again",
        )
        answers = await channel.declare_queue(
            ANSWERS_QUEUE, durable=True, arguments=answers_arguments
        )
        # One `Acks` for both: they share the channel.
        acks = Acks(await channel.get_underlay_channel())
        await self._consume(answers, acks, self.on_answer, self._tag("answers"))
        await self._consume(dead, acks, self.on_dead_letter, self._tag("dead-letters"))

    @staticmethod
    async def _consume(
        queue: AbstractQueue, acks: Acks, handler: AnswerHandler, consumer_tag: str
    ) -> None:
        """Consume `queue` on aiormq's channel under aio-pika's (whose channel `acks` is):
        one task per delivery (aio-pika would add a second, and a message object), acked
        through `acks` once `handler` returned."""
        channel = acks.channel
        in_order = InOrder()

        async def consume(message: aiormq.abc.DeliveredMessage) -> None:
            delivery = message.delivery
            assert isinstance(delivery, Basic.Deliver)  # what a consumer gets
            tag = delivery.delivery_tag
            assert tag is not None
            acks.opened(tag)
            properties = message.header.properties
            answer = Answer(
                job_id=properties.correlation_id,
                type=properties.message_type,
                body=message.body,
                headers=dict(properties.headers or {}),
                redelivered=bool(delivery.redelivered),
                user_id=properties.user_id,
            )
            key = answer.job_id or ""
            try:
                # Deliveries are handled concurrently, but one job's answers in the order
                # they arrived: progress stays in order, and the first terminal one wins.
                await in_order.turn(key)
                try:
                    await handler(answer)
                finally:
                    in_order.done(key)
            except Exception as exc:
                # The store could not take it: leave it to RabbitMQ, to come back later.
                log.warning(
                    "answer for job %s not stored (%s%s); requeued",
                    answer.job_id,
                    exc,
                    f": {exc.__cause__!r}" if exc.__cause__ is not None else "",
                )
                await asyncio.sleep(0.5)
                with contextlib.suppress(*LINK_ERRORS):
                    await channel.basic_nack(tag, requeue=True, wait=False)
                acks.settled(tag)  # only now: no `multiple` ack may cover it before
                return
            # Acked only after the store committed it (the handler returned). If the
            # connection is gone, RabbitMQ delivers it again: duplicates are absorbed.
            acks.handled(tag)

        await channel.basic_consume(queue.name, consume, consumer_tag=consumer_tag)

    # -- publishing -------------------------------------------------------------------------

    def _ready_publisher(self) -> ConfirmedPublisher:
        """The confirmed publisher, if RabbitMQ takes publishes now; else 503 at once."""
        self.check_publishable()
        publisher = self._publisher
        if publisher is None:
            raise ServiceUnavailable(
                "the message broker is not reachable", code="broker_unavailable"
            )
        return publisher

    async def publish_request(
        self,
        contract: Contract,
        job_id: str,
        body: bytes,
        *,
        deadline_at: float | None = None,
        attempt: int = 1,
        trace: TraceContext | None = None,
    ) -> None:
        """Publish a job's request and wait for RabbitMQ's confirm; 503 if it cannot."""
        publisher = self._ready_publisher()
        durable = contract.settings.durability == "durable"
        reply_to = ANSWERS_QUEUE if durable else self.reply_queue
        if reply_to is None:
            raise ServiceUnavailable(
                "the message broker is not reachable", code="broker_unavailable"
            )
        headers: JSONObject = {
            HEADER_ATTEMPT: attempt,
            HEADER_LEASE_SECONDS: contract.settings.lease_seconds,
        }
        if trace is not None:
            headers.update(trace.headers())
        expiration = None
        if deadline_at is not None:
            headers[HEADER_DEADLINE] = int(deadline_at * 1000)  # epoch milliseconds
            # RabbitMQ dead-letters the request if no worker took it by the deadline. Its
            # TTL is 32-bit milliseconds (~49 days): beyond that, the gateway's own sweep
            # expires the job instead.
            remaining = deadline_at - time.time()
            if remaining < MAX_MESSAGE_TTL_SECONDS:
                expiration = max(remaining, 0.001)
        # The frames' properties as pamqp takes them: aio-pika's message object adds
        # nothing here but CPU. (The same properties as `aio_pika.Message` makes: its
        # expiration, too, is whole milliseconds.)
        properties = Basic.Properties(
            content_type="application/json",
            correlation_id=job_id,
            message_id=job_id,
            reply_to=reply_to,
            message_type=contract.op,
            user_id=self.user,
            delivery_mode=PERSISTENT if durable else NOT_PERSISTENT,
            headers=headers,
            expiration=None if expiration is None else str(int(expiration * 1000)),
            priority=0,
        )
        await self._confirmed(
            publisher.publish(
                body, contract.op, properties, mandatory=True, timeout=self.publish_timeout
            ),
            what=f"the request for {contract.op}",
        )

    async def _confirmed(self, publishing: Awaitable[None], what: str) -> None:
        """Await a confirmed publish; 503 (with the reason in its code) if RabbitMQ
        returned it (no queue), nacked it (a queue at its limit), or did not confirm it."""
        try:
            with self.stall.call():
                await publishing
        except PublishError as exc:  # returned: no queue to route to
            raise ServiceUnavailable(f"no queue for {what}", code="broker_unroutable") from exc
        except DeliveryError as exc:  # nacked, e.g. the queue is at its length limit
            raise ServiceUnavailable(
                f"RabbitMQ refused {what} (queue full?)",
                code="broker_refused",
                retry_after=5,
            ) from exc
        except TimeoutError as exc:
            self.stall.mark()
            raise ServiceUnavailable(
                f"the message broker did not confirm {what} in time",
                code="broker_stalled",
                retry_after=2,
            ) from exc
        except LINK_ERRORS as exc:
            raise ServiceUnavailable(
                f"the message broker did not confirm {what}", code="broker_unavailable"
            ) from exc

    async def publish_topic(self, topic: str, body: bytes, message_id: str) -> None:
        """Publish a topic's message to its stream and wait for RabbitMQ's confirm."""
        publisher = self._ready_publisher()
        properties = Basic.Properties(
            content_type="application/json",
            message_id=message_id,
            timestamp=datetime.now(UTC),
            user_id=self.user,
            delivery_mode=PERSISTENT,
            priority=0,
        )
        await self._confirmed(
            publisher.publish(
                body,
                topic,
                properties,
                mandatory=True,
                timeout=self.publish_timeout,
                exchange=TOPICS_EXCHANGE,
            ),
            what=f"the message for topic {topic}",
        )

    async def publish_marker(self, stream: str, message_id: str) -> None:
        """Write a marker (`TOPIC_MARKER_TYPE`) into a topic's stream, confirmed: what
        was confirmed before it has a lower offset (gateway/topics.py)."""
        publisher = self._ready_publisher()
        properties = Basic.Properties(
            message_id=message_id,
            message_type=TOPIC_MARKER_TYPE,
            user_id=self.user,
            delivery_mode=NOT_PERSISTENT,
            priority=0,
        )
        await self._confirmed(
            publisher.publish(
                b"", stream, properties, mandatory=True, timeout=self.stall.overdue_after
            ),
            what=f"a marker for {stream}",
        )

    async def publish_cancel(self, job_id: str, op: str) -> None:
        """Tell workers (who listen on the cancel fanout) that a job was cancelled."""
        exchange = self._cancel_exchange
        if exchange is None or self.problem is not None:
            raise ServiceUnavailable(
                "the message broker is not taking messages now", code="broker_unavailable"
            )
        async with asyncio.timeout(self.publish_timeout):
            await exchange.publish(
                cancel_notice(job_id, op, self.user), routing_key="", mandatory=False
            )
