"""`/v1/me`: who the caller is and what it may do, for the web console to show (and to
offer only what will be allowed). It says nothing the caller's key does not already
carry, and never the key itself. Job and subscribe tokens open their one job or topic
only, so here, as on any other path, they are no credentials (401)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.access import authenticator_of, caller
from gateway.http.responses import ORJSONResponse


async def get_me(request: Request) -> Response:
    principal = await caller(request)
    return ORJSONResponse(
        {
            "auth": authenticator_of(request).enabled,
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
        }
    )


routes = [
    Route("/v1/me", get_me, methods=["GET"]),
]
