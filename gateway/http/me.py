"""`/v1/me`: who the caller is and what it may do, for the web console to show (and to
offer only what will be allowed). It says nothing the caller's token does not already
carry, and never the token itself.

A job or subscribe token opens one thing only, named beside it in the query:
`?access_token=<job token>&job=<id>` or `&topic=<topic>` (as the job's and the topic's
own GETs would take it); without that, such a token is not accepted here (401)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Principal
from gateway.http.access import authenticator_of, caller
from gateway.http.responses import ORJSONResponse


async def whoever(request: Request) -> Principal:
    """The caller, as `caller` authenticates it; a job token is checked against the job
    the query names (`caller` takes it only on that job's own paths)."""
    job = request.query_params.get("job")
    if job is not None and request.method == "GET":
        request = Request({**request.scope, "path_params": {"job_id": job}}, request.receive)
    return await caller(request, topic_events=request.query_params.get("topic"))


def token_kind(principal: Principal) -> str | None:
    if principal.job_id is not None:
        return "job"
    if principal.topic is not None:
        return "topic"
    return None


async def get_me(request: Request) -> Response:
    principal = await whoever(request)
    return ORJSONResponse(
        {
            "auth": authenticator_of(request).enabled,
            "subject": principal.subject,
            "token": token_kind(principal),
            "scopes": sorted(principal.scopes),
        }
    )


routes = [
    Route("/v1/me", get_me, methods=["GET"]),
]
