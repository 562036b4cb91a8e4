"""Reading what clients send: JSON bodies under a size limit, `wait` / `after`, and the
filters and cursor of a job listing."""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import get_args

import orjson
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.jobs import Job
from gateway.store.base import JobQuery, newest_first
from gateway.types import JSON, Status

MAX_DEADLINE_SECONDS = 366 * 24 * 3600
SEQ = re.compile(r"^[0-9]{1,18}$")
STATUSES: tuple[Status, ...] = get_args(Status)
DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_NAME = 255  # of an op, as of an Idempotency-Key
CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,512}$")
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


def job_query(request: Request, *, owner: str | None, everyone: bool) -> JobQuery:
    """`GET /v1/jobs?op=&status=&limit=&cursor=`, as the store's query of whose jobs the
    caller may see (that is the caller's business, not the query string's)."""
    params = request.query_params
    op = params.get("op")
    if op is not None and not _is_name(op):
        raise BadRequest(
            f"op must be an operation's name: 1 to {MAX_NAME} characters, no NUL",
            code="invalid_parameter",
        )
    cursor = params.get("cursor")
    return JobQuery(
        owner=owner,
        everyone=everyone,
        op=op,
        status=_status(params.get("status")),
        before=None if cursor is None else decode_cursor(cursor),
        limit=_page_size(params.get("limit")),
    )


def _is_name(text: str) -> bool:
    """Could name an operation or a job: no name is longer, or holds a NUL (which
    PostgreSQL's text cannot, so it would fail the query instead of matching nothing)."""
    return 1 <= len(text) <= MAX_NAME and "\x00" not in text


def _status(raw: str | None) -> Status | None:
    if raw is None:
        return None
    for status in STATUSES:
        if raw == status:
            return status
    raise BadRequest(
        f"status must be one of {', '.join(STATUSES)}, not {raw!r}", code="invalid_parameter"
    )


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not SEQ.match(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(
            f"limit must be a whole number from 1 to {MAX_PAGE}, not {raw!r}",
            code="invalid_parameter",
        )
    return int(raw)


def encode_cursor(job: Job) -> str:
    """Where a page of a job listing ended (its last job): opaque to clients."""
    return base64.urlsafe_b64encode(orjson.dumps(newest_first(job))).rstrip(b"=").decode()


def decode_cursor(raw: str) -> tuple[float, str]:
    """The position `encode_cursor` gave; 400 for anything else. It is only ever a
    position: the store takes both parts as values, never as SQL."""
    try:
        if not CURSOR.match(raw):
            raise ValueError
        position = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        created_at, job_id = position
        if (
            not isinstance(created_at, int | float)
            or isinstance(created_at, bool)
            or not math.isfinite(created_at)
            or not isinstance(job_id, str)
            or not _is_name(job_id)
        ):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):  # orjson's decode error is a ValueError
        raise BadRequest(
            "cursor must be the next_cursor of a page of this listing, as it came",
            code="invalid_parameter",
        ) from None
    return float(created_at), job_id
