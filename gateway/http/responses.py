"""JSON responses (orjson) and the one handler that maps every error to the pinned body."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError

log = logging.getLogger("gateway.http")

# Starlette's own HTTP errors (unknown route, wrong method) in our vocabulary.
STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError) -> Response:
    return ORJSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = STARLETTE_CODES.get(exc.status_code, "http_error")
    message = (
        exc.detail
        if exc.status_code not in STARLETTE_CODES
        else (
            f"no route for {request.method} {request.url.path}"
            if exc.status_code == 404
            else f"{request.method} is not allowed here"
        )
    )
    return ORJSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ORJSONResponse(
        {"error": {"code": "internal_error", "message": "internal error"}}, status_code=500
    )


EXCEPTION_HANDLERS = {
    GatewayError: handle_gateway_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
