"""One error tree. Each class knows its HTTP status and JSON error code; one handler in
`gateway.http.responses` turns any of them into the pinned error body
`{"error": {"code", "message", "details"?}}`."""

from __future__ import annotations

from typing import ClassVar

from gateway.types import JSONObject


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[JSONObject] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class code
        self.details = details
        self.headers = headers or {}

    def body(self) -> JSONObject:
        error: JSONObject = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(GatewayError):
    """Malformed JSON, a bad query parameter or header."""

    status_code = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    """No token, or one that is invalid or expired."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="gateway"'})


class Forbidden(GatewayError):
    """A valid token without the scope this needs."""

    status_code = 403
    code = "forbidden"


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(GatewayError):
    """An Idempotency-Key reused with a different request body."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(GatewayError):
    """The request's headers or body did not arrive in time (gateway/server.py)."""

    status_code = 408
    code = "request_timeout"


class HeadersTooLarge(GatewayError):
    status_code = 431
    code = "headers_too_large"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidRequest(GatewayError):
    """The body does not match the operation's `request` schema."""

    status_code = 422
    code = "invalid_request"


class TooManyRequests(GatewayError):
    """A client over its request rate or its share of waiters."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(GatewayError):
    """The broker or store cannot take the request now; the client should retry."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class ContractError(Exception):
    """A contract file is broken; raised at start-up, naming the file."""
