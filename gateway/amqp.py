"""AMQP below aio-pika, for the gateway's per-request path: publishing with confirms
and acking deliveries, a loop turn's worth of frames in one socket write.

aiormq writes each publish and each ack with a socket write of its own; on loopback that
write was the costliest single thing the gateway did per request. These classes share
aiormq's own bookkeeping (delivery tags, confirmations, returns), so every publish still
waits for its own confirm and every delivery is acked only once handled; they read
aiormq attributes outside its documented API, hence the `aiormq<8` pin in pyproject.toml
(tests/test_round_trip.py and tests/test_stalls.py fail if one changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiormq
import aiormq.abc
from aio_pika.exceptions import ChannelInvalidStateError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader


class Outbox:
    """Frames for one AMQP channel, written together: whatever is added during one turn
    of the event loop goes to the connection's writer as one chunk (one socket write),
    in the order added. (aiormq writes each publish, each ack, with a socket write of
    its own: on loopback, that write was the costliest single thing the gateway did per
    request.) `gather`, if given, adds frames of its own at that moment."""

    def __init__(
        self,
        channel: aiormq.abc.AbstractChannel,
        gather: Callable[[], list[aiormq.abc.FrameType]] | None = None,
    ) -> None:
        self.channel = channel
        self._gather = gather
        self._frames: list[aiormq.abc.FrameType] = []
        self._due = False
        self._sender: asyncio.Task[None] | None = None

    def add(self, frames: list[aiormq.abc.FrameType]) -> None:
        self._frames += frames
        self.flush_soon()

    def flush_soon(self) -> None:
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._due = False
        if self._gather is not None:
            self._frames += self._gather()
        if self._sender is not None or not self._frames:
            return  # the sender waiting for room takes these too, after the ones before
        if self.channel.is_closed:
            self._frames.clear()  # the channel's close settled (or will settle) them all
            return
        chunk = aiormq.abc.ChannelFrame.marshall(self.channel.number, self._frames)
        try:
            self.channel.connection.write_queue.put_nowait(chunk)
        except asyncio.QueueFull:
            # The writer is behind: one task waits for room, taking everything added
            # meanwhile in order, so nothing overtakes what was added before it.
            self._sender = asyncio.create_task(self._send_when_room())
            return
        self._frames = []

    async def _send_when_room(self) -> None:
        try:
            while self._frames and not self.channel.is_closed:
                frames, self._frames = self._frames, []
                chunk = aiormq.abc.ChannelFrame.marshall(self.channel.number, frames)
                await self.channel.connection.write_queue.put(chunk)
        finally:
            self._sender = None


class ConfirmedPublisher:
    """Publishes with publisher confirms on one aiormq channel, through an `Outbox`: all
    those of one turn of the event loop in one socket write. Each still waits for its
    own confirm (or nack, or return), exactly as with aiormq's `basic_publish`, whose
    bookkeeping this shares: the channel's delivery tags, its confirmations (settled by
    aiormq when RabbitMQ answers, failed by it when the channel closes) and its map of
    message ids for returns. Nothing else may publish on the channel (it would number
    its publish out of the order they reach the wire)."""

    def __init__(self, channel: aiormq.Channel) -> None:
        self.channel = channel
        self._outbox = Outbox(channel)
        self._frame_max = channel.max_content_size

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        properties: Basic.Properties,
        *,
        mandatory: bool,
        timeout: float,
        exchange: str = "",
    ) -> None:
        """Raise `DeliveryError` if nacked, `PublishError` if returned, `TimeoutError`
        without a confirm in `timeout` seconds, a link error if the channel closes."""
        channel = self.channel
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        message_id = properties.message_id
        assert message_id is not None  # returns are matched by it
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag

        def forget(_: object) -> None:
            if channel.message_id_delivery_tag.get(message_id) == tag:
                del channel.message_id_delivery_tag[message_id]

        confirmation.add_done_callback(forget)
        frames: list[aiormq.abc.FrameType] = [
            Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
            ContentHeader(properties=properties, body_size=len(body)),
        ]
        frames += (
            ContentBody(body[at : at + self._frame_max])
            for at in range(0, len(body), self._frame_max)
        )
        # From here on the publish goes out, whatever happens to its caller: the tag is
        # taken (a later confirm of a caller gone is ignored by aiormq).
        self._outbox.add(frames)
        async with asyncio.timeout(timeout):
            await confirmation


class Acks:
    """One channel's deliveries between their arrival and their ack, and the acks.

    A delivery is acked only once its handler returned (the store committed it), as
    before; what changes is how: the acks due are sent once per turn of the event loop,
    in one socket write, as one `multiple` ack for every handled delivery below the
    oldest one still being handled, and single acks for the handled ones past it.

    A `multiple` ack covers every unacked delivery of the channel up to its tag, so this
    must see all of the channel's deliveries that need an ack: one instance per channel,
    for every consumer on it that acks. Deliveries are `opened` in the order they arrive
    (aiormq starts one task per delivery, in order; asyncio runs tasks in the order they
    were made), so when a handler finishes, every delivery before it has been opened.
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._outbox = Outbox(channel, gather=self._acks_due)
        self._open: set[int] = set()
        """Delivered, and not yet handled (or its nack not yet queued): never covered."""
        self._handled: list[int] = []
        """Handled since the last flush: to ack."""

    def opened(self, tag: int) -> None:
        self._open.add(tag)

    def handled(self, tag: int) -> None:
        """The store committed what the delivery brought: ack it (soon, with others)."""
        self._open.discard(tag)
        self._handled.append(tag)
        self._outbox.flush_soon()

    def settled(self, tag: int) -> None:
        """The delivery was settled otherwise (its nack is queued): nothing to ack."""
        self._open.discard(tag)

    def _acks_due(self) -> list[aiormq.abc.FrameType]:
        handled, self._handled = self._handled, []
        oldest = min(self._open, default=None)
        covered = [tag for tag in handled if oldest is None or tag < oldest]
        frames: list[aiormq.abc.FrameType] = []
        if covered:
            # Every unacked delivery up to it is handled: those below `oldest` are all
            # in `covered`, or acked, or nacked, in frames queued before this one.
            frames.append(Basic.Ack(delivery_tag=max(covered), multiple=True))
        if oldest is not None:
            frames += (Basic.Ack(delivery_tag=tag) for tag in handled if tag > oldest)
        return frames


class InOrder:
    """Deliveries are handled concurrently, but one key's (a job's) one at a time, in the
    order they arrived. Cheaper than a lock per key: the usual key has one delivery in
    flight, and then costs a dict entry, no lock and no future."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        """Keys being handled -> the deliveries waiting for their turn, first first."""

    async def turn(self, key: str) -> None:
        """Wait for `key`'s turn; `done(key)` must follow, whatever happens after."""
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = []
            return
        turn = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.done(key)  # the turn was handed over just as this was cancelled
            else:
                waiting.remove(turn)
            raise

    def done(self, key: str) -> None:
        """The key's turn is over: hand it to the next delivery waiting, if any."""
        waiting = self._waiting[key]
        if waiting:
            waiting.pop(0).set_result(None)
        else:
            del self._waiting[key]
