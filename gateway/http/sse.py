"""A lean Server-Sent Events response: one task per stream.

Why not sse-starlette's EventSourceResponse (whose frame encoding we still use): it runs
the stream, the heartbeat, the disconnect watch and a shutdown watch as four sibling
tasks, which costs ~45 KB per idle stream; at 10,000 idle streams that is most of the
gateway's memory. Here the producer sends its own heartbeats (it knows when it has been
idle: it is waiting on its job with a timeout), each send has a deadline (a client too
slow to take a frame is dropped and resumes with Last-Event-ID, so nothing piles up),
and a disconnect cancels the stream: the gateway's connection (gateway/server.py) does
that itself; under another server, a second task waits for the disconnect.

On the gateway's connection the stream also leaves its request's task once its head is
out: it goes on in a task of its own that writes to the connection, so an idle stream
holds no frames of the middleware stack (~5 KB less per idle stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.server import GatewayHttpProtocol, connection_of

log = logging.getLogger(__name__)

HEADERS = {
    # Proxies and browsers must pass each event on at once, and never cache the stream.
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",
}
_RAW_HEADERS = [
    *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in HEADERS.items()),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
"""What `init_headers(HEADERS)` makes, made once: every idle stream holds its headers."""


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        send_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # As Starlette's StreamingResponse does: no body, so no Content-Length.
        self.status_code = 200
        self.background = None
        if headers:
            self.init_headers({**HEADERS, **headers})
        else:
            self.raw_headers = list(_RAW_HEADERS)  # its own list; the tuples are shared
        self.frames = frames
        self.send_timeout = send_timeout
        self.client_gone = False

    async def _cancel_on_disconnect(self, receive: Receive, stream: asyncio.Task[Any]) -> None:
        """Under another server than the gateway's: wait for the client to go away."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.client_gone = True
        stream.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        connection = connection_of(scope)
        watcher: asyncio.Task[None] | None = None
        detached: asyncio.Task[None] | None = None
        if connection is not None:
            connection.cancel_on_disconnect(stream)
        else:
            watcher = asyncio.create_task(self._cancel_on_disconnect(receive, stream))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if connection is not None and connection.detach_response(scope):
                # The stream goes on in a task of its own, and this request's (with the
                # middleware stack's frames) ends.
                detached = asyncio.create_task(self._go_on(connection))
                connection.adopt(detached)
                return
            # Not detached (a HEAD, a pipelined request behind, another server): rare.
            async for frame in self.frames:
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if connection is not None and connection.shutting_down:
                stream.uncancel()  # ended by a graceful shutdown: end the response cleanly
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif self.client_gone or (connection is not None and connection.disconnected):
                stream.uncancel()
            else:
                raise  # a shutdown of the server's own, not the client leaving
        except TimeoutError:
            pass  # too slow a client: it reconnects with Last-Event-ID
        finally:
            if connection is not None and detached is None:
                connection.cancel_on_disconnect(None)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if detached is None:
                await self.frames.aclose()

    async def _go_on(self, connection: GatewayHttpProtocol) -> None:
        """The stream, detached from its request's task (see `__call__`)."""
        complete = False
        try:
            async for frame in self.frames:
                if connection.write_paused:
                    async with asyncio.timeout(self.send_timeout):
                        await connection.drain()
                if connection.disconnected:
                    return
                connection.write_chunk(frame)
            complete = True
        except asyncio.CancelledError:
            if not (connection.disconnected or connection.shutting_down):
                raise  # cancelled by the server's own shutdown, not the client leaving
            current = asyncio.current_task()
            assert current is not None
            current.uncancel()
            complete = not connection.disconnected  # a graceful shutdown: end it cleanly
        except TimeoutError:
            pass  # too slow a client: it reconnects with Last-Event-ID
        except Exception:
            log.exception("event stream failed")
        finally:
            connection.cancel_on_disconnect(None)
            await self.frames.aclose()
            if complete:
                connection.end_response()
            else:
                connection.transport.close()  # cut short: the client resumes by Last-Event-ID
