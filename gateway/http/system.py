"""Health, readiness, metrics, and the OpenAPI (HTTP side) and AsyncAPI (AMQP side)
documents."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.asyncapi import build_asyncapi
from gateway.http.ops import service_of
from gateway.http.responses import ORJSONResponse
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.openapi import build_openapi
from gateway.types import JSONObject


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when RabbitMQ takes publishes (a probe is confirmed) and the store answers, each
    within the stall threshold: a paused or alarmed broker, or a paused database, is not
    ready even though its connection is open."""
    problems = await service_of(request).problems()
    checks = {"broker": "broker" not in problems, "store": "store" not in problems}
    body: JSONObject = {"status": "unavailable" if problems else "ready", "checks": checks}
    if problems:
        body["problems"] = problems
    return ORJSONResponse(
        body,
        status_code=503 if problems else 200,
        headers={"Retry-After": "1"} if problems else None,
    )


async def metrics(request: Request) -> Response:
    return Response(service_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        service = service_of(request)
        state.openapi = build_openapi(service.contracts, service.topics)
    return ORJSONResponse(state.openapi)


async def asyncapi(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "asyncapi", None) is None:
        service = service_of(request)
        state.asyncapi = build_asyncapi(service.contracts, service.topics)
    return ORJSONResponse(state.asyncapi)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/asyncapi.json", asyncapi, methods=["GET"]),
]
