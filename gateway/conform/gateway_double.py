"""Conform's stand-in for the gateway, on the AMQP side only: the same topology, request
messages and cancel notices as a gateway sends, and the answers and dead letters read back.

It exists so the worker under test cannot tell it from a gateway. The topology comes from
gateway/broker.py's own declarations (operation queue with its dead-letter arguments,
dead-letter exchange and queue, cancel exchange); the request messages carry the
properties and headers of docs/workers.md "The request", plus W3C `traceparent` and
`tracestate`. The one difference is `reply_to`: conform's own exclusive queue, as for a
light operation, so that the answers are conform's alone. Dead letters are read from an
exclusive queue of conform's bound to the dead-letter exchange (a fanout), so
`gateway.dead-letters` is never consumed or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import replace

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPError, ChannelClosed

from gateway.broker import (
    cancel_notice,
    declare_cancel_exchange,
    declare_dead_letters,
    declare_operation_queue,
)
from gateway.conform import SetupError
from gateway.conform.plan import Plan
from gateway.conform.records import Record
from gateway.conform.where import display_url
from gateway.link import TopologyRefused
from gateway.trace_context import TraceContext
from gateway.trust import broker_user
from gateway.types import JSONObject
from gateway.wire import (
    DEAD_LETTER_EXCHANGE,
    HEADER_ATTEMPT,
    HEADER_DEADLINE,
    HEADER_LEASE_SECONDS,
)

__all__ = ["GatewayDouble", "new_job_id"]

CONNECT_TIMEOUT = 10.0
GET_TIMEOUT = 5.0


def new_job_id() -> str:
    """As the gateway's (gateway/jobs.py): 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def _wire_number(value: float) -> int | float:
    """Whole numbers as integers, as a contract's `lease_seconds: 2` reaches a worker."""
    return int(value) if float(value).is_integer() else value


class GatewayDouble:
    def __init__(self, plan: Plan, url: str, record: Record) -> None:
        self.plan = plan
        self.url = url
        self.record = record
        self.user = broker_user(url)
        self.reply_queue = f"gateway.conform.replies.{secrets.token_hex(8)}"
        self._connection: AbstractConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._cancel_exchange: AbstractExchange | None = None
        self.found_idle = False
        """The operation's queue had no consumer and no message when conform came: what
        is in it afterwards is conform's own."""

    async def open(self) -> None:
        """Connect, declare the gateway's topology, and listen for answers and dead
        letters. `SetupError` if RabbitMQ cannot be reached, refuses the topology, or the
        operation's queue is not idle (another worker, or requests left in it)."""
        try:
            self._connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT)
        except (OSError, AMQPError, TimeoutError) as exc:
            raise SetupError(
                f"cannot reach RabbitMQ at {display_url(self.url)}: {exc or type(exc).__name__}"
            ) from exc
        connection = self._connection
        channel = await connection.channel()
        try:
            await declare_dead_letters(channel)
            await declare_operation_queue(connection, self.plan.contract)
            self._cancel_exchange = await declare_cancel_exchange(channel)
        except TopologyRefused as exc:
            raise SetupError(str(exc)) from exc
        messages, consumers = await self.queue_counts()
        if consumers or messages:
            raise SetupError(
                f"the queue {self.plan.op} is not idle ({consumers} consumers, {messages} "
                f"messages): run conform on a virtual host of its own"
            )
        self.found_idle = True
        replies = await channel.declare_queue(self.reply_queue, exclusive=True, auto_delete=True)
        await replies.consume(self._on_answer, no_ack=True)
        dead = await channel.declare_queue(exclusive=True, auto_delete=True)
        await dead.bind(DEAD_LETTER_EXCHANGE)
        await dead.consume(self._on_dead_letter, no_ack=True)
        self._publishing = await connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def purge(self) -> None:
        """Empty the operation's queue (of conform's own leftover requests)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        queue = await channel.declare_queue(self.plan.op, passive=True)
        await queue.purge()
        await channel.close()

    async def _on_answer(self, message: AbstractIncomingMessage) -> None:
        self.record.answer(message.correlation_id, message.type, message.body)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        self.record.dead_letter(message.correlation_id)

    async def queue_counts(self) -> tuple[int, int]:
        """The operation queue's ready messages and consumers (a passive declare, on a
        channel of its own: a failed one closes its channel)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self.plan.op, passive=True)
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        except ChannelClosed as exc:
            raise SetupError(f"the queue {self.plan.op} is gone: {exc}") from exc
        finally:
            if not channel.is_closed:
                await channel.close()

    def request(
        self,
        job_id: str,
        body: bytes,
        *,
        purpose: str,
        attempt: int = 1,
        lease_seconds: float | None = None,
        deadline_ms: int | None = None,
    ) -> aio_pika.Message:
        """A request message as the gateway publishes it. `deadline_ms`: an `x-deadline`
        of the caller's, published without `expiration` so that RabbitMQ delivers it
        whatever its time; else the contract's deadline, if any, as the gateway sets it."""
        settings = self.plan.contract.settings
        headers: JSONObject = {
            HEADER_ATTEMPT: attempt,
            HEADER_LEASE_SECONDS: _wire_number(lease_seconds or settings.lease_seconds),
            **replace(TraceContext.start(sampled=True), state=f"conform={purpose}").headers(),
        }
        expiration: float | None = None
        if deadline_ms is not None:
            headers[HEADER_DEADLINE] = deadline_ms
        elif settings.deadline_seconds is not None:
            headers[HEADER_DEADLINE] = int((time.time() + settings.deadline_seconds) * 1000)
            expiration = settings.deadline_seconds
        durable = settings.durability == "durable"
        return aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=job_id,
            message_id=job_id,
            reply_to=self.reply_queue,
            type=self.plan.op,
            user_id=self.user,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if durable
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            headers=headers,
            expiration=expiration,
            priority=0,
        )

    async def publish(self, message: aio_pika.Message, label: str) -> float:
        """Publish a request, confirmed; when it was sent (monotonic)."""
        assert self._publishing is not None and message.correlation_id is not None
        sent = self.record.sent(message.correlation_id, label)
        await self._publishing.default_exchange.publish(
            message, routing_key=self.plan.op, mandatory=True
        )
        return sent

    async def send(
        self,
        label: str,
        body: bytes,
        *,
        purpose: str,
        lease_seconds: float | None = None,
        deadline_ms: int | None = None,
    ) -> str:
        """Publish a new job's request; its id."""
        job_id = new_job_id()
        message = self.request(
            job_id, body, purpose=purpose, lease_seconds=lease_seconds, deadline_ms=deadline_ms
        )
        await self.publish(message, label)
        return job_id

    async def cancel(self, job_id: str) -> float:
        """The gateway's cancel notice for a job; when it was sent."""
        assert self._cancel_exchange is not None
        sent = time.monotonic()
        await self._cancel_exchange.publish(
            cancel_notice(job_id, self.plan.op, self.user), routing_key="", mandatory=False
        )
        return sent

    async def redeliverable(self, label: str, body: bytes) -> str:
        """A request RabbitMQ will redeliver: published, taken with basic.get and nacked
        with requeue, so its next delivery carries the redelivered flag. Call before any
        worker consumes the queue."""
        assert self._connection is not None
        job_id = await self.send(label, body, purpose="redelivery")
        channel = await self._connection.channel()
        queue: AbstractQueue = await channel.declare_queue(self.plan.op, passive=True)
        taken = None
        with contextlib.suppress(TimeoutError, aio_pika.exceptions.QueueEmpty):
            async with asyncio.timeout(GET_TIMEOUT):
                # A confirmed publish is in the queue: the first get finds it.
                taken = await queue.get(no_ack=False, fail=False)
        if taken is None or taken.correlation_id != job_id:
            raise SetupError(f"the request just published to {self.plan.op} was not there to get")
        await taken.nack(requeue=True)
        await channel.close()
        return job_id
