"""`/v1/jobs/{id}`: a job, cancelling it, and its events (long-poll JSON or SSE)."""

from __future__ import annotations

from contextlib import nullcontext

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.access import caller, client_key, job_json, limits_of
from gateway.http.ops import service_of
from gateway.http.params import after_seq, resume_after, wait_seconds
from gateway.http.responses import ORJSONResponse
from gateway.http.stream import event_stream, wants_event_stream


async def get_job(request: Request) -> Response:
    service = service_of(request)
    principal = await caller(request)
    job_id = request.path_params["job_id"]
    wait = wait_seconds(request, service.settings.max_wait_seconds)
    after = after_seq(request)
    if wait:
        service.check_capacity()
        with limits_of(request).waiting(client_key(request, principal)):
            job = await service.wait_for_job(job_id, wait, after=after, principal=principal)
    else:
        job = await service.job(job_id, principal)
    return ORJSONResponse(job_json(request, job))


async def get_events(request: Request) -> Response:
    service = service_of(request)
    principal = await caller(request)
    job_id = request.path_params["job_id"]
    client = client_key(request, principal)
    if wants_event_stream(request):
        return await event_stream(
            service, job_id, resume_after(request), principal, limits_of(request), client
        )
    wait = wait_seconds(request, service.settings.max_wait_seconds) or 0.0
    after = after_seq(request) or 0
    # Only a wait holds a waiter slot: reading what is there now takes none.
    with limits_of(request).waiting(client) if wait else nullcontext():
        events = await service.wait_for_events(job_id, after, wait, principal)
    return ORJSONResponse(
        {
            "events": [e.to_json() for e in events],
            "next": events[-1].seq if events else after,
        }
    )


async def cancel_job(request: Request) -> Response:
    principal = await caller(request)
    job = await service_of(request).cancel(request.path_params["job_id"], principal)
    return ORJSONResponse(job_json(request, job))


routes = [
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/events", get_events, methods=["GET"]),
]
