"""`GET /v1/jobs/{id}/events` as Server-Sent Events.

Replays what the client has not seen (after `Last-Event-ID`, or `?after=` on a first
connect), then goes live, without a gap or a duplicate because both come from the stored,
numbered log; ends after the terminal event. sse-starlette runs the heartbeat, the send
timeout and the disconnect watch as sibling tasks: a client too slow to take an event
within the send timeout is disconnected (and resumes by Last-Event-ID), so nothing is
buffered without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Principal
from gateway.limits import ClientLimits
from gateway.service import GatewayService
from gateway.types import TERMINAL_EVENTS

IDLE_RECHECK_SECONDS = 3600.0


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def frames(
    service: GatewayService, job_id: str, after: int, limits: ClientLimits, client: str
) -> AsyncIterator[ServerSentEvent]:
    retry = service.settings.sse_retry_ms
    yield ServerSentEvent(comment="stream of job " + job_id, retry=retry)
    cursor = after
    with limits.waiting(client), service.hub.watch(job_id) as watch:
        watch.arm()
        events = await service.store.events(job_id, cursor)
        while True:
            for event in events:
                yield ServerSentEvent(
                    data=orjson.dumps(event.data).decode(), event=event.type, id=str(event.seq)
                )
                cursor = event.seq
                if event.type in TERMINAL_EVENTS:
                    return
            if not events:
                job = await service.store.get(job_id)
                if job is None or (job.terminal and cursor >= job.seq):
                    return  # purged, or the client already has the end
            await watch.sleep(IDLE_RECHECK_SECONDS)
            # What woke us usually carries the new events; a gap means read the store.
            noticed = watch.events_after(cursor)
            watch.arm()
            events = noticed if noticed is not None else await service.store.events(job_id, cursor)


async def event_stream(
    service: GatewayService,
    job_id: str,
    after: int,
    principal: Principal,
    limits: ClientLimits,
    client: str,
) -> Response:
    job = await service.job(job_id, principal)  # a 404 must come before the 200 of a stream
    if job.terminal and after >= job.seq:
        # The client has the end already (an EventSource reconnecting after the terminal
        # event): 204 is what tells a browser to stop reconnecting.
        return Response(status_code=204)
    service.check_capacity()
    with limits.waiting(client):
        pass  # refuse now, while a JSON error can still be sent; the stream holds a slot
    settings = service.settings
    return EventSourceResponse(
        frames(service, job_id, after, limits, client),
        ping=settings.sse_ping_seconds,
        send_timeout=settings.sse_send_timeout_seconds,
        headers={"Cache-Control": "no-cache, no-store"},
    )
