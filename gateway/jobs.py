"""The job state machine: an event comes in, the job gets its new status.

Every job has a numbered log of events (`seq` 1, 2, ...). The job resource is a summary of
that log; `apply` is the only place that decides how an event changes it. The first
terminal event wins: anything after it is ignored, which absorbs at-least-once duplicates.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gateway.trace_context import TraceContext
from gateway.types import JSON, TERMINAL_EVENTS, TERMINAL_STATUSES, EventType, JSONObject, Status

# Event type -> the status it moves a job to.
STATUS_AFTER: dict[str, Status] = {
    "queued": "queued",
    "started": "running",
    "progress": "running",
    "result": "succeeded",
    "error": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}


def new_job_id() -> str:
    """128 random bits, URL-safe: unguessable, and no more than a path segment."""
    return secrets.token_urlsafe(16)


def now() -> float:
    return time.time()


def isoformat(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    job_id: str
    seq: int
    type: EventType
    data: JSON
    time: float

    def to_json(self) -> JSONObject:
        return {"seq": self.seq, "type": self.type, "time": isoformat(self.time), "data": self.data}

    def to_record(self) -> JSONObject:
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "type": self.type,
            "data": self.data,
            "time": self.time,
        }

    @classmethod
    def from_record(cls, record: JSONObject) -> Event:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    op: str
    status: Status
    seq: int
    created_at: float
    updated_at: float
    result: JSON = None
    error: JSONObject | None = None
    progress: JSON = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    deadline_at: float | None = None
    """When the job expires if it has not ended (epoch seconds)."""
    owner: str | None = None
    """The subject that submitted it, qualified by its key source (`gateway.auth`), with
    auth on; nobody else may see it. None: made while auth was off."""
    traceparent: str | None = None
    """The W3C `traceparent` its request message carries (gateway/trace_context.py)."""
    tracestate: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_record(self) -> JSONObject:
        """Every field, for telling other gateway instances (see `from_record`)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_record(cls, record: JSONObject) -> Job:
        return cls(**record)

    def to_json(self) -> JSONObject:
        body: JSONObject = {
            "id": self.id,
            "op": self.op,
            "status": self.status,
            "seq": self.seq,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }
        if self.status == "succeeded":
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.progress is not None:
            body["progress"] = self.progress
        if self.deadline_at is not None:
            body["deadline"] = isoformat(self.deadline_at)
        if self.traceparent is not None:
            body["trace_id"] = self.traceparent[3:35]  # 00-<trace id>-<span id>-<flags>
        return body


def new_job(
    op: str,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    deadline_seconds: float | None = None,
    owner: str | None = None,
    id_suffix: str = "",
    trace: TraceContext | None = None,
) -> tuple[Job, Event]:
    """A fresh job and its first event, `queued` (seq 1). `id_suffix` ends its id (a light
    job's says which process holds it: gateway/siblings.py)."""
    ts = now()
    job = Job(
        deadline_at=None if deadline_seconds is None else ts + deadline_seconds,
        owner=owner,
        id=new_job_id() + id_suffix,
        op=op,
        status="queued",
        seq=1,
        created_at=ts,
        updated_at=ts,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        traceparent=None if trace is None else trace.traceparent,
        tracestate=None if trace is None else trace.state,
    )
    return job, Event(job.id, 1, "queued", None, ts)


def apply(
    job: Job, type: EventType, data: JSON, at: float | None = None
) -> tuple[Job, Event] | None:
    """The job after `type` happened to it, and the event to store; None if it is ignored.

    Ignored: anything after a terminal event; `started` or `queued` once the job runs; a
    progress equal to the job's current one (what an at-least-once redelivery of the last
    answer looks like; it would tell nobody anything new).
    """
    if job.terminal:
        return None
    if type in ("queued", "started") and job.status == "running":
        return None
    if type == "progress" and job.status == "running" and data == job.progress:
        return None
    ts = at if at is not None else now()
    seq = job.seq + 1
    event = Event(job.id, seq, type, data, ts)
    changes: JSONObject = {"status": STATUS_AFTER[type], "seq": seq, "updated_at": ts}
    if type == "progress":
        changes["progress"] = data
    elif type == "result":
        changes["result"] = data
    elif type in TERMINAL_EVENTS:
        changes["error"] = data
    return replace(job, **changes), event


def error_body(code: str, message: str, details: list[JSONObject] | None = None) -> JSONObject:
    """The `error` object of a failed, cancelled or expired job (the HTTP error shape)."""
    body: JSONObject = {"code": code, "message": message}
    if details:
        body["details"] = details
    return body
