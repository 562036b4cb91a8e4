"""`/v1/jobs`: the caller's recent jobs, a job, cancelling it, and its events (long-poll
JSON or SSE)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Principal
from gateway.errors import Forbidden
from gateway.http.access import caller, client_key, job_json, limits_of
from gateway.http.ops import service_of
from gateway.http.params import after_seq, encode_cursor, job_query, resume_after, wait_seconds
from gateway.http.responses import ORJSONResponse
from gateway.http.stream import event_stream, wants_event_stream


def listed_owner(principal: Principal) -> tuple[str | None, bool]:
    """Whose jobs the caller may list, as (owner, everyone): as `Principal.may_read`
    decides, one's own with auth on, everyone's with it off. A job or subscribe token
    opens its one thing only (and has no subject, which would read as everyone)."""
    if principal.is_token:
        raise Forbidden("a job or subscribe token may not list jobs")
    return principal.subject, principal.subject is None


async def list_jobs(request: Request) -> Response:
    principal = await caller(request)
    owner, everyone = listed_owner(principal)
    query = job_query(request, owner=owner, everyone=everyone)
    # One more than the page: whether a next page starts after it.
    found = await service_of(request).store.list_jobs(replace(query, limit=query.limit + 1))
    page = found[: query.limit]
    return ORJSONResponse(
        {
            "jobs": [job_json(request, job) for job in page],
            "next_cursor": encode_cursor(page[-1]) if len(found) > query.limit else None,
        }
    )


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
    service.telemetry.delivered(job)
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
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/events", get_events, methods=["GET"]),
]
