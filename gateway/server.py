"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the bounds an edge needs.

uvicorn bounds neither the size of a request's headers nor the time a client may take to
send a request, and it closes a connection it answered early (a `413` to a client that
asked for `Connection: close`) while that client is still sending, which the client sees
as a reset instead of the answer. Here, on every connection:

- headers over `max_header_bytes` get `431`; they are counted as they arrive, so the
  parser never holds more than that and one read;
- a request's headers must arrive within `header_timeout` of the connection opening (or of
  the request's first byte, on a kept-alive connection), its body within `body_timeout`
  of the headers: else `408` (a connection that sent nothing is just closed); an idle
  kept-alive connection closes after uvicorn's own `timeout_keep_alive`;
- a connection closed while its client is still sending is closed gracefully: the answer
  goes out, the write side is shut, and what the client still sends is read and dropped
  (for at most `linger_seconds` and `linger_bytes`), so it reads the answer, not a reset;
- malformed HTTP gets the JSON error body, not uvicorn's plain text.

It extends uvicorn's `HttpToolsProtocol` (tests/test_http_limits.py holds it to all of
the above); the keep-alive hot path gains two attribute checks per read.

It is also lighter per connection, for the thousands of idle streams and long-polls one
process holds (gateway/hub.py): uvicorn gives each connection two `asyncio.Event`s and a
`deque` of pipelined requests (~2 KB together, mostly the deques' blocks); here they are
small slotted stand-ins. A request finds its connection with `connection_of(scope)`:
a stream is cancelled by it when its client goes away (no task of its own listening for
that), and may detach its response from its request's task, so that an idle stream holds
no frames of the middleware stack (gateway/http/sse.py). A response's head goes out with
its body in one send, not two.
"""

from __future__ import annotations

import asyncio
import functools
import http
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.config import Settings
from gateway.errors import BadRequest, GatewayError, HeadersTooLarge, RequestTimeout

MIN_LINGER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    linger_seconds: float = 5.0
    linger_bytes: int = MIN_LINGER_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            linger_bytes=max(MIN_LINGER_BYTES, 4 * settings.max_body_bytes),
        )


def error_response_bytes(error: GatewayError) -> bytes:
    """A whole HTTP/1.1 response carrying the JSON error body, closing the connection."""
    body = orjson.dumps(error.body())
    status = error.status_code
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


CONNECTION_KEY = "gateway.connection"
"""The scope key under which a request finds its connection (see `connection_of`)."""


class _Event:
    """What uvicorn needs of an `asyncio.Event` (set, clear, wait), in ~60 bytes instead of
    ~800 (an Event's deque allocates a block of 64 slots at once)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


_ASGI_INFO: dict[tuple[str, str], Any] = {}


def _asgi_info(info: Any) -> Any:
    """One `scope["asgi"]` dict per distinct content, instead of one per request."""
    key = (info["version"], info["spec_version"])
    return _ASGI_INFO.setdefault(key, info)


class _Pipeline:
    """uvicorn's queue of pipelined requests (`appendleft`, `pop`, truth), holding nothing
    until a client pipelines: a `deque` costs ~600 bytes on every connection."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Any] | None = None

    def appendleft(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.insert(0, item)

    def pop(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty pipeline")
        return self._items.pop()

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items or ())


class GatewayHttpProtocol(HttpToolsProtocol):
    # Slots, not the instance dict: an idle waiter's connection costs less memory.
    __slots__ = (
        "_cancel_on_loss",
        "_deadline",
        "_detached",
        "_head_bytes",
        "_in_head",
        "_lingered",
        "_lingering",
        "disconnected",
        "limits",
        "shutting_down",
    )

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = cast(Any, _Pipeline())
        self.limits = limits
        self._in_head = True
        """Between requests, or reading one's headers; False while reading its body."""
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False
        self._lingered = 0
        self._cancel_on_loss: asyncio.Task[Any] | None = None
        self._detached: RequestResponseCycle | None = None
        self.disconnected = False
        """True once the connection is gone (the client closed it, or it broke)."""
        self.shutting_down = False
        """True once a graceful shutdown ended the stream this connection carried."""

    # -- what a request may ask of its connection -----------------------------------------

    def cancel_on_disconnect(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel `task` (a stream) if the connection goes away; None: no longer."""
        self._cancel_on_loss = task

    @property
    def write_paused(self) -> bool:
        """True while the client is not taking what was written (a write would wait)."""
        return bool(self.flow.write_paused)

    async def drain(self) -> None:
        """Until the client takes what was written (or the connection is gone)."""
        await self.flow.drain()

    # A long response (a stream) may go on after its request's task has returned, so that
    # while it idles it holds no frames of the app's middleware stack (~5 KB a stream):
    # `detach_response`, then `write_chunk`s, then `end_response` (or closing).

    def detach_response(self, scope: MutableMapping[str, Any]) -> bool:
        """Detach the started, chunked response of the request of `scope` from that
        request's task, which may then return without completing it; `adopt` the task
        that goes on with it. False (nothing done) when that cannot be: not chunked, a
        HEAD, or another request pipelined behind."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or scope["method"] == "HEAD"
            or self.disconnected
            or self._detached is not None
        ):
            return False
        cycle.disconnected = True  # to uvicorn: the app may return with the response open
        self._detached = cycle
        self._flush_head()  # before the chunks written past it
        return True

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """`task` writes the detached response: a graceful shutdown waits for it (then
        cancels it), and so does a disconnect (at once)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self._cancel_on_loss = task

    def write_chunk(self, data: bytes) -> None:
        """One chunk of the detached response (nothing, once the connection is closing)."""
        if not self.transport.is_closing():
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_response(self) -> None:
        """Complete the detached response; the connection serves its next request."""
        cycle, self._detached = self._detached, None
        if cycle is None or self.transport.is_closing():
            return
        self.transport.write(b"0\r\n\r\n")
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        self.on_response_complete()

    # -- uvicorn's protocol, extended ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Set while writable; cleared by pause_writing (uvicorn's FlowControl).
        self.flow._is_writable_event = cast(asyncio.Event, _Event(True))
        self._arm(self.limits.header_timeout)

    def shutdown(self) -> None:
        """A graceful shutdown: uvicorn's (an idle connection closes, a busy one closes
        after its response), and a stream in progress is ended now, cleanly: it may never
        end by itself (a topic's), and its client resumes elsewhere by Last-Event-ID."""
        super().shutdown()
        stream = self._cancel_on_loss
        if stream is not None and not stream.done():
            self.shutting_down = True
            stream.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.disconnected = True
        super().connection_lost(exc)
        task, self._cancel_on_loss = self._cancel_on_loss, None
        if task is not None:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > self.limits.linger_bytes:
                self.transport.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing() or self._lingering:
            return
        # Timers only for what one read did not complete: a request that comes whole (the
        # usual case on a kept-alive connection) arms none.
        if self._in_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(self._headers_too_large())
            elif self._head_bytes and self._deadline is None:
                self._arm(self.limits.header_timeout)
        elif self._deadline is None:
            self._arm(self.limits.body_timeout)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        if self._lingering:
            return  # refused: the parser goes on through what was read, to no effect
        if self._head_bytes > self.limits.max_header_bytes and self._head_size() > (
            self.limits.max_header_bytes
        ):  # a whole head came in one read
            self._refuse(self._headers_too_large())
            return
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is previous:
            return  # an upgrade: no request cycle
        # The request's task has not run yet: it sees only the light event.
        self.cycle.message_event = cast(asyncio.Event, _Event())
        self.scope[CONNECTION_KEY] = self  # type: ignore[literal-required]
        # Held for as long as the request waits: share what is the same for all.
        self.scope["asgi"] = _asgi_info(self.scope["asgi"])
        self.url = b""  # parsed into the scope already
        if not self.cycle.keep_alive:
            # uvicorn closes such a connection as soon as it has answered, perhaps before
            # the client has sent its whole body: close it gracefully instead.
            self.cycle.transport = cast(asyncio.Transport, _ClosesGracefully(self))
        self.cycle.transport = cast(
            asyncio.Transport, _HeadWithBody(self.cycle.transport, self.loop)
        )

    def on_body(self, body: bytes) -> None:
        if not self._lingering:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        self._head_bytes = 0
        if not self._lingering:
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(BadRequest("the request is not valid HTTP/1.1", code="malformed_request"))

    # -- bounds ------------------------------------------------------------------------------

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _headers_too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"the request's headers are larger than the limit of "
            f"{self.limits.max_header_bytes} bytes"
        )

    def _flush_head(self) -> None:
        """Out with a head held back for its body: what is written next must follow it."""
        if self.cycle is not None and isinstance(self.cycle.transport, _HeadWithBody):
            self.cycle.transport.flush()

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._lingering:
            return
        if self._in_head:
            if self._head_bytes == 0:
                self.transport.close()  # opened, and never sent anything
                return
            self._refuse(
                RequestTimeout(
                    f"the request's headers did not arrive within {self.limits.header_timeout:g} s"
                )
            )
            return
        cycle = self.cycle
        if cycle.response_started:
            self.transport.close()  # answered already; the rest of its body never came
            return
        # The application is waiting for the body: it sees a disconnect, and writes nothing.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(
            RequestTimeout(
                f"the request's body did not arrive within {self.limits.body_timeout:g} s"
            )
        )

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and close, unless a response is being written already."""
        if self._lingering:
            return
        self._flush_head()
        if (
            self.cycle is not None
            and self.cycle.response_started
            and not (self.cycle.response_complete)
        ):
            self.transport.close()
            return
        self.transport.write(error_response_bytes(error))
        self.close_gracefully()

    def close_gracefully(self) -> None:
        """Shut the write side once the answer is out, and drop what the client still
        sends until it closes too (or the linger bounds run out), then close."""
        self._disarm()
        self._flush_head()
        if self.transport.is_closing() or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.flow.resume_reading()
        self._deadline = self.loop.call_later(self.limits.linger_seconds, self.transport.close)

    def close_after_request(self) -> None:
        if self._in_head:  # the whole request was read: nothing to wait for
            self.transport.close()
        else:
            self.close_gracefully()

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()


def connection_of(scope: MutableMapping[str, Any]) -> GatewayHttpProtocol | None:
    """The connection a request came on, when it came through `GatewayHttpProtocol`."""
    connection = scope.get(CONNECTION_KEY)
    return connection if isinstance(connection, GatewayHttpProtocol) else None


class _ClosesGracefully:
    """The transport as one request's cycle sees it: its `close` waits for the client to
    finish sending (uvicorn calls it right after answering)."""

    def __init__(self, protocol: GatewayHttpProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_request()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadWithBody:
    """The transport as one request's cycle sees it: a response's head goes out with the
    first write of its body, in one send, not two (a fan-out to thousands of long-polls
    makes thousands of sends; so does every answer). A head that no body follows in the
    same turn of the loop goes out alone."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._started = False
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if not self._started:  # uvicorn writes a response's head whole, first
            self._started = True
            self._head = data
            self._loop.call_soon(self.flush)
            return
        head, self._head = self._head, None
        if head is None:
            self._transport.write(data)
        else:
            self._transport.writelines((head, data))

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._transport, name)


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway's app, with the bounds above."""
    protocol = functools.partial(GatewayHttpProtocol, limits=HttpLimits.from_settings(settings))
    return uvicorn.Config(
        app,
        http=cast(Any, protocol),
        timeout_keep_alive=max(1, round(settings.keep_alive_seconds)),
        **options,
    )
