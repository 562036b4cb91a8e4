"""The link to RabbitMQ: the topology the gateway owns, confirmed publishing, and the
consumers that bring workers' answers and dead letters back.

One robust connection (aio-pika) restores channels, queues and consumers by itself after
a reconnect. Until the first connect, and while reconnecting, `publish_request` fails at
once with 503 instead of waiting: a request never hangs on a dead broker.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError
from yarl import URL

from gateway.contracts import Contract, ContractRegistry
from gateway.errors import ServiceUnavailable
from gateway.types import JSONObject

log = logging.getLogger("gateway.broker")

ANSWERS_QUEUE = "gateway.answers"
DEAD_LETTER_EXCHANGE = "gateway.dead-letter"
DEAD_LETTER_QUEUE = "gateway.dead-letters"
CANCEL_EXCHANGE = "gateway.cancel"
MAX_MESSAGE_TTL_SECONDS = (2**32 - 1) / 1000


@dataclass(frozen=True, slots=True)
class Answer:
    """A worker's answer, or a dead-lettered request, as the gateway needs it."""

    job_id: str | None
    type: str | None
    body: bytes
    headers: JSONObject


AnswerHandler = Callable[[Answer], Awaitable[None]]


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


class KeyedLock:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Broker:
    def __init__(
        self,
        url: str,
        contracts: ContractRegistry,
        *,
        on_answer: AnswerHandler,
        on_dead_letter: AnswerHandler,
        publish_timeout: float = 5.0,
        prefetch: int = 256,
        reconnect_interval: float = 1.0,
        attach: Callable[[AbstractRobustChannel], Awaitable[None]] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        # Several addresses (a cluster), separated by commas or spaces: see _fail_over.
        self.urls = url.replace(",", " ").split()
        self.attach = attach
        self.on_reconnect = on_reconnect
        self.contracts = contracts
        self.on_answer = on_answer
        self.on_dead_letter = on_dead_letter
        self.publish_timeout = publish_timeout
        self.prefetch = prefetch
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._cancel_exchange: AbstractExchange | None = None
        self._ready = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None
        self._failover: asyncio.Task[None] | None = None
        # Light operations' answers come back to this instance alone (their jobs live in
        # its memory), through a queue of its own that needs no disk. Named anew on every
        # connect: see _declare_own_queues.
        self.reply_queue = ""
        self._own_channel: AbstractRobustChannel | None = None

    @property
    def ready(self) -> bool:
        """Connected, with the topology declared (or restored after a reconnect)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        """Connect in the background; the gateway serves (with 503s) meanwhile."""
        self._starting = asyncio.create_task(self._connect(), name="broker-connect")

    async def _connect(self) -> None:
        # fail_fast=False: keep retrying the first connect too, every reconnect_interval.
        options: dict[str, Any] = {
            "fail_fast": False,
            "reconnect_interval": self.reconnect_interval,
        }
        connection = aio_pika.RobustConnection(make_url(self.urls[0], **options), **options)
        self._connection = connection
        if len(self.urls) > 1:
            self._failover = asyncio.create_task(self._fail_over(connection), name="failover")
        await connection.connect()
        self._publisher = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._cancel_exchange = await self._publisher.declare_exchange(
            CANCEL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        consumer = await self._connection.channel()
        await consumer.set_qos(prefetch_count=self.prefetch)
        await self._declare(consumer)
        self._own_channel = await self._connection.channel()
        await self._own_channel.set_qos(prefetch_count=self.prefetch)
        await self._declare_own_queues()
        # Robust channels restore the topology and consumers before reconnect_callbacks run.
        self._connection.close_callbacks.add(lambda *_: self._ready.clear())
        self._connection.reconnect_callbacks.add(lambda *_: self._reconnected())
        self._ready.set()
        log.info("connected to RabbitMQ, topology declared for %d operations", len(self.contracts))

    async def _declare_own_queues(self) -> None:
        """This instance's own (exclusive) queues: declared afresh after every reconnect,
        not restored, since the node an old one lived on may be the one that is gone."""
        channel = self._own_channel
        assert channel is not None
        self.reply_queue = f"gateway.replies.{secrets.token_hex(8)}"
        replies = await channel.declare_queue(
            self.reply_queue, exclusive=True, auto_delete=True, robust=False
        )
        await replies.consume(self._consumer(self.on_answer), robust=False)
        if self.attach is not None:
            await self.attach(channel)

    async def _reconnected(self) -> None:
        try:
            await self._declare_own_queues()
        except Exception:
            log.exception("could not declare this instance's queues after a reconnect")
            return
        self._ready.set()
        if self.on_reconnect is not None:
            self.on_reconnect()

    async def _fail_over(self, connection: aio_pika.RobustConnection) -> None:
        """While disconnected, point the next reconnect attempt at the next address.
        (aio-pika's robust connection retries one URL; each attempt reads `url` anew.)"""
        index = 0
        while True:
            await asyncio.sleep(self.reconnect_interval)
            if connection.connected.is_set():
                continue
            index = (index + 1) % len(self.urls)
            connection.url = URL(self.urls[index]).with_query(connection.url.query)
            log.info(
                "RabbitMQ unreachable; next attempt at address %d of %d", index + 1, len(self.urls)
            )

    async def _declare(self, channel: AbstractChannel) -> None:
        dlx = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead: AbstractQueue = await channel.declare_queue(
            DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx)
        answers = await channel.declare_queue(
            ANSWERS_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        for contract in self.contracts.values():
            await channel.declare_queue(
                contract.op, durable=True, arguments=queue_arguments(contract)
            )
        replies = await channel.declare_queue(self.reply_queue, exclusive=True, auto_delete=True)
        await answers.consume(self._consumer(self.on_answer))
        await replies.consume(self._consumer(self.on_answer))
        await dead.consume(self._consumer(self.on_dead_letter))

    def _consumer(self, handler: AnswerHandler) -> Callable[[AbstractIncomingMessage], Any]:
        in_order = KeyedLock()

        async def consume(message: AbstractIncomingMessage) -> None:
            answer = Answer(
                job_id=message.correlation_id,
                type=message.type,
                body=message.body,
                headers=dict(message.headers or {}),
            )
            try:
                # Deliveries are handled concurrently, but one job's answers in the order
                # they arrived: progress stays in order, and the first terminal one wins.
                async with in_order(answer.job_id or ""):
                    await handler(answer)
            except Exception:
                # The store could not take it: leave it to RabbitMQ, to come back later.
                log.exception("answer for job %s not stored; requeued", answer.job_id)
                await asyncio.sleep(0.5)
                await message.nack(requeue=True)
                return
            # Acked only after the store committed it (the handler returned).
            await message.ack()

        return consume

    async def publish_request(
        self,
        contract: Contract,
        job_id: str,
        body: bytes,
        *,
        deadline_at: float | None = None,
        attempt: int = 1,
    ) -> None:
        """Publish a job's request and wait for RabbitMQ's confirm; 503 if it cannot."""
        channel = self._publisher
        if channel is None or not self.ready:
            raise ServiceUnavailable(
                "the message broker is not reachable", code="broker_unavailable"
            )
        durable = contract.settings.durability == "durable"
        headers: JSONObject = {
            "x-attempt": attempt,
            "x-lease-seconds": contract.settings.lease_seconds,
        }
        expiration = None
        if deadline_at is not None:
            headers["x-deadline"] = int(deadline_at * 1000)  # epoch milliseconds
            # RabbitMQ dead-letters the request if no worker took it by the deadline. Its
            # TTL is 32-bit milliseconds (~49 days): beyond that, the gateway's own sweep
            # expires the job instead.
            remaining = deadline_at - time.time()
            if remaining < MAX_MESSAGE_TTL_SECONDS:
                expiration = max(remaining, 0.001)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=job_id,
            message_id=job_id,
            reply_to=ANSWERS_QUEUE if durable else self.reply_queue,
            type=contract.op,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if durable
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            headers=headers,
            expiration=expiration,
        )
        try:
            await channel.default_exchange.publish(
                message, routing_key=contract.op, mandatory=True, timeout=self.publish_timeout
            )
        except PublishError as exc:  # returned: no queue to route to
            raise ServiceUnavailable(
                f"no queue for operation {contract.op}", code="broker_unroutable"
            ) from exc
        except DeliveryError as exc:  # nacked, e.g. the queue is at its length limit
            raise ServiceUnavailable(
                f"RabbitMQ refused the request for {contract.op} (queue full?)",
                code="broker_refused",
                retry_after=5,
            ) from exc
        except (TimeoutError, ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            raise ServiceUnavailable(
                "the message broker did not confirm the request", code="broker_unavailable"
            ) from exc

    async def publish_cancel(self, job_id: str, op: str) -> None:
        """Tell workers (who listen on the cancel fanout) that a job was cancelled."""
        exchange = self._cancel_exchange
        if exchange is None or not self.ready:
            raise ServiceUnavailable(
                "the message broker is not reachable", code="broker_unavailable"
            )
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps({"job_id": job_id, "op": op}),
                content_type="application/json",
                correlation_id=job_id,
                type="cancel",
            ),
            routing_key="",
            mandatory=False,
            timeout=self.publish_timeout,
        )

    async def close(self) -> None:
        if self._failover is not None:
            self._failover.cancel()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
