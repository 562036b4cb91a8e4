"""Reading what clients send: JSON bodies under a size limit, and `wait` / `after`."""

from __future__ import annotations

import re

import orjson
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.types import JSON

MAX_DEADLINE_SECONDS = 366 * 24 * 3600
SEQ = re.compile(r"^[0-9]{1,18}$")
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]+(?:\.[0-9]+)?)\"?", re.IGNORECASE)


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json_body(request: Request, limit: int) -> JSON:
    """The body as JSON: 415 if not declared JSON, 413 over `limit` bytes, 400 if malformed."""
    body, _ = await read_sized_json_body(request, limit)
    return body


async def read_sized_json_body(request: Request, limit: int) -> tuple[JSON, int]:
    """`read_json_body`, and the body's size in bytes (large bodies are checked against
    their contract off the event loop)."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json "
            "(curl: --json '{...}' or -H 'Content-Type: application/json')"
        )
    declared = request.headers.get("content-length")
    if declared is not None and SEQ.match(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks)), size
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also refuses NaN
        raise BadRequest(
            f"{name} must be a non-negative number of seconds, not {raw!r}",
            code="invalid_parameter",
        )
    return value


def wait_seconds(request: Request, cap: float, *, prefer: bool = False) -> float | None:
    """`?wait=N` (or, if `prefer`, the `Prefer: wait=N` header), capped; None if absent."""
    raw = request.query_params.get("wait")
    if raw is None and prefer:
        header = request.headers.get("prefer")
        match = PREFER_WAIT.search(header) if header else None
        raw = match.group(1) if match else None
    if raw is None:
        return None
    return min(_number("wait", raw), cap)


def after_seq(request: Request) -> int | None:
    raw = request.query_params.get("after")
    if raw is None:
        return None
    if not SEQ.match(raw):
        raise BadRequest(
            f"after must be an event number (a non-negative integer), not {raw!r}",
            code="invalid_parameter",
        )
    return int(raw)


def deadline_seconds(request: Request) -> float | None:
    """`X-Deadline-Seconds: N`: the job expires unless it ends within N seconds."""
    raw = request.headers.get("x-deadline-seconds")
    if raw is None:
        return None
    value = _number("X-Deadline-Seconds", raw)
    if not 0 < value <= MAX_DEADLINE_SECONDS:
        raise BadRequest(
            f"X-Deadline-Seconds must be more than 0 and at most {MAX_DEADLINE_SECONDS} (a year)",
            code="invalid_parameter",
        )
    return value


def resume_after(request: Request) -> int:
    """Where a job's event stream resumes: `Last-Event-ID` (a reconnect) wins over
    `?after=`; from the start without either."""
    resume = resume_point(request)
    return 0 if resume is None else resume


def resume_point(request: Request) -> int | None:
    """`Last-Event-ID` (a reconnect), else `?after=`, else None."""
    raw = request.headers.get("last-event-id")
    if raw is not None and raw.strip():
        if not SEQ.match(raw.strip()):
            raise BadRequest(
                f"Last-Event-ID must be an event number, not {raw!r}", code="invalid_parameter"
            )
        return int(raw)
    return after_seq(request)
