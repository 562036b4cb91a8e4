"""A relay between the worker and RabbitMQ that reads the worker's AMQP frames as they pass.

It exists because a third party cannot see, over AMQP, when a worker acks a request: a
queue's message count leaves out unacknowledged deliveries, and the management API may
not be there. `gateway conform` gives the worker this relay's address instead of the
broker's. Every byte is passed on unchanged, at once; a copy is parsed on the side, and
what matters to the cases comes out as events, each stamped with the time it passed:
- a request of the operation's queue delivered to the worker (`basic.deliver` or
  `basic.get-ok` from the default exchange with the operation as routing key),
- its settlement: `basic.ack`, `basic.nack`, `basic.reject` (with `multiple` and
  `requeue` as sent), or released when its channel or connection closed unsettled,
- an answer the worker publishes (`basic.publish` to the reply queue): its type, and so
  in which order the worker answered and acked within one TCP stream.
If a frame cannot be parsed, that connection goes unobserved (`blind` says why); the
relaying goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pamqp import commands, frame, header
from pamqp.exceptions import PAMQPException

__all__ = ["Answered", "Delivered", "Settled", "Tap", "TapEvent"]

FRAME_HEADER = struct.Struct(">BHI")  # type, channel, payload size
METHOD_IDS = struct.Struct(">HH")  # class id, method id
FRAME_METHOD, FRAME_CONTENT_HEADER = 1, 2
CLASS_CHANNEL, CLASS_BASIC = 20, 60
PROTOCOL_HEADER = b"AMQP"
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Delivered:
    """RabbitMQ handed the worker a request of the operation's queue."""

    at: float
    correlation_id: str | None
    redelivered: bool


@dataclass(frozen=True, slots=True)
class Settled:
    """The worker settled a delivered request (or its channel closed with it unsettled)."""

    at: float
    correlation_id: str | None
    how: Literal["ack", "nack", "reject", "released"]
    requeue: bool


@dataclass(frozen=True, slots=True)
class Answered:
    """The worker published an answer to conform's reply queue."""

    at: float
    correlation_id: str | None
    type: str | None


TapEvent = Delivered | Settled | Answered


class _Connection:
    """The frames of one worker connection, both ways, and its unsettled deliveries."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.blind: str | None = None
        self._buffers = {True: bytearray(), False: bytearray()}  # from the worker?
        # Per channel: the deliver or publish whose content header comes next.
        self._awaiting_header: dict[
            tuple[bool, int], commands.Basic.Deliver | commands.Basic.GetOk | commands.Basic.Publish
        ] = {}
        # Per channel: delivery tag -> correlation id of the operation's requests.
        self._unsettled: dict[int, dict[int, str | None]] = {}

    def feed(self, data: bytes, from_worker: bool) -> None:
        if self.blind is not None:
            return
        buffer = self._buffers[from_worker]
        buffer += data
        try:
            while True:
                if from_worker and buffer[:4] == PROTOCOL_HEADER:
                    if len(buffer) < 8:
                        return
                    del buffer[:8]
                    continue
                if len(buffer) < FRAME_HEADER.size:
                    return
                kind, channel, size = FRAME_HEADER.unpack_from(buffer)
                end = FRAME_HEADER.size + size + 1
                if len(buffer) < end:
                    return
                raw = bytes(buffer[:end])
                del buffer[:end]
                self._frame(kind, channel, raw, from_worker)
        except (PAMQPException, ValueError, struct.error) as exc:
            self.blind = f"an AMQP frame could not be read ({exc!r})"

    def _frame(self, kind: int, channel: int, raw: bytes, from_worker: bool) -> None:
        if kind == FRAME_METHOD:
            class_id, _ = METHOD_IDS.unpack_from(raw, FRAME_HEADER.size)
            if class_id in (CLASS_CHANNEL, CLASS_BASIC):
                self._method(channel, frame.unmarshal(raw)[2], from_worker)
        elif kind == FRAME_CONTENT_HEADER:
            method = self._awaiting_header.pop((from_worker, channel), None)
            if method is not None:
                content = frame.unmarshal(raw)[2]
                assert isinstance(content, header.ContentHeader)
                self._content(channel, method, content.properties)

    def _method(self, channel: int, method: object, from_worker: bool) -> None:
        now = time.monotonic()
        if isinstance(method, commands.Basic.Deliver | commands.Basic.GetOk) and not from_worker:
            if method.exchange == "" and method.routing_key == self.tap.queue:
                self._awaiting_header[(False, channel)] = method
        elif isinstance(method, commands.Basic.Publish) and from_worker:
            if method.exchange == "" and method.routing_key == self.tap.reply_queue:
                self._awaiting_header[(True, channel)] = method
        elif isinstance(method, commands.Basic.Ack) and from_worker:
            self._settle(channel, method.delivery_tag, method.multiple, "ack", False, now)
        elif isinstance(method, commands.Basic.Nack) and from_worker:
            self._settle(channel, method.delivery_tag, method.multiple, "nack", method.requeue, now)
        elif isinstance(method, commands.Basic.Reject) and from_worker:
            self._settle(channel, method.delivery_tag, False, "reject", method.requeue, now)
        elif (isinstance(method, commands.Basic.Recover) and from_worker) or isinstance(
            method, commands.Channel.Close | commands.Channel.CloseOk
        ):
            self.release(channel, now)

    def _content(
        self,
        channel: int,
        method: commands.Basic.Deliver | commands.Basic.GetOk | commands.Basic.Publish,
        properties: commands.Basic.Properties,
    ) -> None:
        now = time.monotonic()
        if isinstance(method, commands.Basic.Publish):
            self.tap.emit(Answered(now, properties.correlation_id, properties.message_type))
            return
        tag = method.delivery_tag
        assert tag is not None
        self._unsettled.setdefault(channel, {})[tag] = properties.correlation_id
        self.tap.emit(Delivered(now, properties.correlation_id, bool(method.redelivered)))

    def _settle(
        self,
        channel: int,
        tag: int | None,
        multiple: bool | None,
        how: Literal["ack", "nack", "reject"],
        requeue: bool | None,
        now: float,
    ) -> None:
        unsettled = self._unsettled.get(channel, {})
        # Tag 0 with `multiple`: everything unsettled on the channel.
        tags = [t for t in unsettled if tag == 0 or t <= (tag or 0)] if multiple else [tag or 0]
        for settled in sorted(tags):
            if settled in unsettled:
                correlation_id = unsettled.pop(settled)
                self.tap.emit(Settled(now, correlation_id, how, bool(requeue)))

    def release(self, channel: int | None, now: float) -> None:
        """What a closed channel (None: every channel) held goes back to the queue."""
        channels = list(self._unsettled) if channel is None else [channel]
        for number in channels:
            for correlation_id in self._unsettled.pop(number, {}).values():
                self.tap.emit(Settled(now, correlation_id, "released", True))


class Tap:
    """Listens on a free loopback port; relays each connection to RabbitMQ at
    `upstream` (over TLS if `tls`), reporting events of operation `queue` to `on_event`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        tls: bool,
        queue: str,
        reply_queue: str,
        on_event: Callable[[TapEvent], None],
    ) -> None:
        self.upstream = upstream
        self.tls = tls
        self.queue = queue
        self.reply_queue = reply_queue
        self.on_event = on_event
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def blind(self) -> str | None:
        """Why some connection's frames went unread; None if all were read."""
        return next((c.blind for c in self._connections if c.blind is not None), None)

    def emit(self, event: TapEvent) -> None:
        self.on_event(event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        connection = _Connection(self)
        self._connections.add(connection)
        try:
            host, port = self.upstream
            context = ssl.create_default_context() if self.tls else None
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port, ssl=context)
            except OSError:
                return  # the worker sees its connection refused, as it would the broker's
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, connection, from_worker=True),
                self._pipe(up_reader, writer, connection, from_worker=False),
            )
        finally:
            connection.release(None, time.monotonic())
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        connection: _Connection,
        *,
        from_worker: bool,
    ) -> None:
        try:
            while data := await source.read(READ_SIZE):
                sink.write(data)  # first pass it on, then look at it
                connection.feed(data, from_worker)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.transport.abort()
