"""A lean Server-Sent Events response: one task per stream, plus one that waits for the
client to go away.

Why not sse-starlette's EventSourceResponse (whose frame encoding we still use): it runs
the stream, the heartbeat, the disconnect watch and a shutdown watch as four sibling
tasks, which costs ~45 KB per idle stream; at 10,000 idle streams that is most of the
gateway's memory. Here the producer sends its own heartbeats (it knows when it has been
idle: it is waiting on its job with a timeout), each send has a deadline (a client too
slow to take a frame is dropped and resumes with Last-Event-ID, so nothing piles up),
and a disconnect cancels the stream. ~20 KB per idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

HEADERS = {
    # Proxies and browsers must pass each event on at once, and never cache the stream.
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",
}


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
        self.init_headers({**HEADERS, **(headers or {})})
        self.frames = frames
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        gone = False

        async def wait_for_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            stream.cancel()

        watcher = asyncio.create_task(wait_for_disconnect())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for frame in self.frames:
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise  # a shutdown, not the client leaving
            stream.uncancel()
        except TimeoutError:
            pass  # too slow a client: it reconnects with Last-Event-ID
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.frames.aclose()
