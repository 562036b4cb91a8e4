"""Server-Sent Events of a followed log: `GET /v1/jobs/{id}/events` and
`GET /v1/topics/{topic}/events`.

Replays what the client has not seen (after `Last-Event-ID`, or `?after=` on a first
connect), then goes live, without a gap or a duplicate because both come from one
numbered log (the job store, a topic's stream); a job's ends after its terminal event.
While idle it sends a heartbeat comment every `sse_ping_seconds`; the response
(gateway/http/sse.py) drops a client too slow to take a frame within the send timeout,
so nothing is buffered without bound. While the
log is out (the job store, RabbitMQ for a topic's catch-up), the stream stays open
(heartbeats) and reads it again every second: a client that reconnected instead would
be refused with 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Principal
from gateway.errors import ServiceUnavailable
from gateway.follow import Follow, Numbered
from gateway.http.sse import EventStreamResponse
from gateway.limits import ClientLimits, WaiterSlot
from gateway.service import GatewayService
from gateway.topic_feed import TopicMessage
from gateway.types import JSON


class Framed(Numbered):
    """What a stream sends: a job's event, a topic's message."""

    @property
    def data(self) -> JSON: ...


PING = b": ping\n\n"
STORE_RETRY_SECONDS = 1.0


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


_last_encoded: tuple[Framed, bytes] | None = None


def encode(event: Framed) -> bytes:
    """The event's frame. A fan-out hands one event object to every stream of its job:
    it is encoded once, not once per stream (a topic's message comes with its frame)."""
    if isinstance(event, TopicMessage):
        return event.frame
    global _last_encoded
    last = _last_encoded
    if last is not None and last[0] is event:
        return last[1]
    frame = ServerSentEvent(
        data=orjson.dumps(event.data).decode(), event=event.type, id=str(event.seq)
    ).encode()
    _last_encoded = (event, frame)
    return frame


async def frames(
    follow: Follow[Any],
    comment: str,
    service: GatewayService,
    slot: WaiterSlot,
    *,
    tell_position: bool,
) -> AsyncGenerator[bytes, None]:
    settings = service.settings
    yield ServerSentEvent(comment=comment, retry=settings.sse_retry_ms).encode()
    if tell_position:
        # An id with no data: no event, but the client's Last-Event-ID from here on, so
        # one that drops before the first message resumes from where it started.
        yield b"id: %d\n\n" % follow.cursor
    with slot, follow:
        while not follow.ended:
            try:
                events = await follow.next(settings.sse_ping_seconds)
            except ServiceUnavailable:
                # The log is out: hold the stream open (a client that reconnected
                # now would get a 503) and read again shortly.
                yield PING
                await asyncio.sleep(STORE_RETRY_SECONDS)
                continue
            if not events and not follow.ended:
                yield PING  # idle: keep proxies from closing the stream
            elif len(events) == 1:
                yield encode(events[0])
            else:
                yield b"".join(map(encode, events))  # what came together, in one write


def stream_response(
    service: GatewayService,
    follow: Follow[Any],
    comment: str,
    limits: ClientLimits,
    client: str,
    *,
    tell_position: bool = False,
) -> Response:
    """The stream of what `follow` reads, holding a waiter slot of `client`'s;
    `tell_position`: first, the id to resume from (where the stream starts)."""
    service.check_capacity()
    # Refused now, while a JSON error can still be sent; the stream holds the slot once it
    # runs, without a second check (a share that shrank meanwhile must not cut it).
    slot = limits.waiting(client)
    return EventStreamResponse(
        frames(follow, comment, service, slot, tell_position=tell_position),
        send_timeout=service.settings.sse_send_timeout_seconds,
    )


async def event_stream(
    service: GatewayService,
    job_id: str,
    after: int,
    principal: Principal,
    limits: ClientLimits,
    client: str,
) -> Response:
    """A job's events."""
    job = await service.job(job_id, principal)  # a 404 must come before the 200 of a stream
    if job.terminal and after >= job.seq:
        # The client has the end already (an EventSource reconnecting after the terminal
        # event): 204 is what tells a browser to stop reconnecting.
        return Response(status_code=204)
    follow = service.follow(job_id, after, until_end=True)
    return stream_response(service, follow, "stream of job " + job_id, limits, client)
