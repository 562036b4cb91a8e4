"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.ops import service_of
from gateway.http.responses import ORJSONResponse
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.openapi import build_openapi


async def healthz(request: Request) -> Response:
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    service = service_of(request)
    checks = {"broker": service.broker.ready, "store": True}
    try:
        await service.store.ping()
    except Exception:
        checks["store"] = False
    ready = all(checks.values())
    return ORJSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


async def metrics(request: Request) -> Response:
    return Response(service_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = build_openapi(service_of(request).contracts)
    return ORJSONResponse(state.openapi)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
