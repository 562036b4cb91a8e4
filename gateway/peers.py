"""Many gateway instances, one truth: when an instance records an event, it tells the
others through RabbitMQ (a fanout exchange, one exclusive queue per instance), so their
long-polls and streams wake at once instead of polling the shared store.

A notice carries the job and the event, so a woken waiter usually needs no store read. A
notice is fire-and-forget: one lost while an instance was disconnected is made good when
it reconnects, by waking every waiter of that instance to re-read the store.

Notices carry the gateway's broker user as `user_id` (RabbitMQ lets no one else set it);
with `trusted_user` given (the gateway runs with `--worker-users`), a notice from any other
user is dropped, so a worker that learns an instance's queue cannot wake its waiters with
a made-up event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from gateway.hub import Hub
from gateway.jobs import Event, Job
from gateway.link import LINK_ERRORS
from gateway.wire import NOTICES_EXCHANGE

log = logging.getLogger("gateway.peers")

TELL_TIMEOUT = 1.0  # a notice that cannot be written by then is dropped: waiters re-read


class PeerNotices:
    """A `gateway.broker.Attachment`: rides on the broker link's two connections."""

    def __init__(self, hub: Hub, user: str, *, trusted_user: str | None = None) -> None:
        self.hub = hub
        self.user = user
        self.trusted_user = trusted_user
        self.instance = secrets.token_hex(8)
        self._exchange: AbstractExchange | None = None
        self._telling: set[asyncio.Task[None]] = set()  # held, so none is collected early

    async def attach_publisher(self, channel: AbstractChannel) -> None:
        self._exchange = await channel.declare_exchange(
            NOTICES_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )

    async def attach_consumer(
        self, connection: AbstractConnection, channel: AbstractChannel
    ) -> None:
        """This instance's queue of notices: a new exclusive one on every connection (the
        old one may have lived on a node that is gone)."""
        exchange = await channel.declare_exchange(
            NOTICES_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_notice, no_ack=True)

    def reconnected(self) -> None:
        """Notices may have been lost while disconnected: every waiter re-reads."""
        self.hub.wake_all()

    def tell_soon(self, job: Job, event: Event) -> asyncio.Task[None]:
        """`tell`, in a task of its own, which the caller may wait for or not."""
        task = asyncio.create_task(self.tell(job, event))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)
        return task

    async def flush(self) -> None:
        """Until the notices on their way are out (each gives up after TELL_TIMEOUT)."""
        if self._telling:
            await asyncio.wait(set(self._telling))

    async def tell(self, job: Job, event: Event) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        body = orjson.dumps({"job": job.to_record(), "event": event.to_record()})
        try:
            async with asyncio.timeout(TELL_TIMEOUT):
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        headers={"x-instance": self.instance},
                        user_id=self.user,
                    ),
                    routing_key="",
                    mandatory=False,  # no other instance (yet) is no error
                )
        except LINK_ERRORS as exc:
            # The link is down or closing (a reconnect, a shutdown): said by the link
            # itself, no traceback. The event is stored: an instance that missed the notice
            # finds it at its next read.
            log.warning(
                "notice for job %s not sent to other instances (%s)",
                job.id,
                exc or type(exc).__name__,
            )
        except Exception:
            log.warning("notice for job %s not sent to other instances", job.id, exc_info=True)

    async def _on_notice(self, message: AbstractIncomingMessage) -> None:
        if (message.headers or {}).get("x-instance") == self.instance:
            return  # our own, already handled here
        if self.trusted_user is not None and message.user_id != self.trusted_user:
            log.warning("notice from broker user %r dropped", message.user_id)
            return
        try:
            notice = orjson.loads(message.body)
            job = Job.from_record(notice["job"])
            event = Event.from_record(notice["event"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed notice dropped")
            return
        self.hub.notify(job.id, job, event)
