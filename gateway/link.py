"""One AMQP connection kept up, for the broker link (gateway/broker.py): connect, trying
each address of a cluster in turn; set the connection up (channels, queues, consumers);
and after a loss, set everything up again on a new connection. Not aio-pika's robust
connection, whose restore after a broker restart sometimes came back without consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

log = logging.getLogger("gateway.broker")

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# Errors that mean "the connection or channel is gone", not a bug of ours.
LINK_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


class TopologyRefused(Exception):
    """RabbitMQ refused the topology this gateway needs (PRECONDITION_FAILED): another
    store's gateways own this virtual host, or a queue exists with other arguments."""


def blocked(connection: AbstractConnection | None) -> bool:
    """Whether RabbitMQ sent connection.blocked (and not yet unblocked) on `connection`.
    aiormq keeps that in a private event (it waits on it before writing); read it where
    it is, and fall back to confirms alone if a future aiormq moves it."""
    transport = getattr(connection, "transport", None)
    unblocked = getattr(
        getattr(transport, "connection", None), "_Connection__connection_unblocked", None
    )
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


class Link:
    """One AMQP connection kept up: connect (trying each address in turn), set it up, and
    after a loss set everything up again on a new connection."""

    def __init__(
        self,
        role: str,
        urls: Sequence[str],
        set_up: Callable[[AbstractConnection], Awaitable[None]],
        reconnect_interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.role = role
        self.urls = list(urls)
        self.set_up = set_up
        self.reconnect_interval = reconnect_interval
        self.on_change = on_change
        self.connection: AbstractConnection | None = None
        self.up = asyncio.Event()
        self.up_since = 0.0
        self.refused: str | None = None
        """Why RabbitMQ refused the topology, while it does."""
        self._address = 0

    async def run(self) -> None:
        while True:
            url = self.urls[self._address]
            try:
                connection = await aio_pika.connect(
                    url,
                    timeout=CONNECT_TIMEOUT,
                    client_properties={"connection_name": f"gateway {self.role}"},
                )
            except LINK_ERRORS as exc:
                self._next_address(f"cannot connect ({exc})")
                await asyncio.sleep(self.reconnect_interval)
                continue
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
            self.connection = connection
            try:
                await self.set_up(connection)
                if self.refused is not None:
                    log.info("RabbitMQ accepts this gateway's topology again")
                self.refused = None
                self.up_since = time.time()
                self.up.set()
                self.on_change()
                await lost.wait()
                log.warning("%s connection to RabbitMQ lost; reconnecting", self.role)
            except TopologyRefused as exc:
                if self.refused != str(exc):
                    log.error("%s", exc)
                self.refused = str(exc)
            except LINK_ERRORS as exc:
                log.warning("%s connection to RabbitMQ failed (%s); reconnecting", self.role, exc)
            finally:
                self.connection = None
                self.up.clear()
                self.on_change()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await connection.close()
            await asyncio.sleep(self.reconnect_interval)

    def _next_address(self, why: str) -> None:
        if len(self.urls) > 1:
            self._address = (self._address + 1) % len(self.urls)
            log.info(
                "RabbitMQ %s; next attempt at address %d of %d",
                why,
                self._address + 1,
                len(self.urls),
            )
        else:
            log.warning("RabbitMQ %s; retrying", why)
