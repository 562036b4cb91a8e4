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
"""

from __future__ import annotations

import asyncio
import functools
import http
from dataclasses import dataclass
from typing import Any, cast

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class GatewayHttpProtocol(HttpToolsProtocol):
    # Slots, not the instance dict: an idle waiter's connection costs less memory.
    __slots__ = ("_deadline", "_head_bytes", "_in_head", "_lingered", "_lingering", "limits")

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = True
        """Between requests, or reading one's headers; False while reading its body."""
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False
        self._lingered = 0

    # -- uvicorn's protocol, extended ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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
        super().on_headers_complete()
        if not self.cycle.keep_alive:
            # uvicorn closes such a connection as soon as it has answered, perhaps before
            # the client has sent its whole body: close it gracefully instead.
            self.cycle.transport = cast(asyncio.Transport, _ClosesGracefully(self))

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


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway's app, with the bounds above."""
    protocol = functools.partial(GatewayHttpProtocol, limits=HttpLimits.from_settings(settings))
    return uvicorn.Config(
        app,
        http=cast(Any, protocol),
        timeout_keep_alive=max(1, round(settings.keep_alive_seconds)),
        **options,
    )
