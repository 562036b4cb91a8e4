"""W3C Trace Context (`traceparent`, `tracestate`): parsed, started and continued, in one place.

A trace starts at the client (or here, if the client sent none), goes with the job into
the request message's AMQP headers, is continued by the worker (same trace id, a span id
of its own) and comes back on its answers. The gateway, the Python worker kit and the
tests all read and write the header through this module, so one parser decides what a
valid header is. Standard library only: `gateway.worker` imports it in a light install.

https://www.w3.org/TR/trace-context/ — version `00` only: a header of any other version,
or malformed in any way, is treated as absent (the spec's "restart the trace").
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from gateway.wire import HEADER_TRACEPARENT, HEADER_TRACESTATE

__all__ = ["TraceContext", "continue_or_start", "otel_context"]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_TRACESTATE = 512
"""The spec's limit on what a participant must propagate; longer is dropped, not cut."""
_TRACESTATE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: no header injection
SAMPLED = "01"
NOT_SAMPLED = "00"


def _new_span_id() -> str:
    while (span := secrets.token_hex(8)) == _ZERO_SPAN:
        pass  # all zeros is invalid; one chance in 2**64
    return span


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One position in a trace: whose span (`span_id`) the next hop is a child of."""

    trace_id: str
    """32 lower-case hex digits, never all zeros."""
    span_id: str
    """16 lower-case hex digits, never all zeros: the `parent-id` field of `traceparent`."""
    flags: str = NOT_SAMPLED
    """Two hex digits; `01` means sampled (recorded) upstream."""
    state: str | None = None
    """`tracestate`, vendors' opaque data, passed on unchanged."""

    @classmethod
    def parse(cls, traceparent: object, tracestate: object = None) -> TraceContext | None:
        """The context the headers carry, or None if `traceparent` is absent or invalid.
        (Header values from AMQP may be bytes or anything else: only `str` is read.)"""
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode("ascii", "replace")
        if not isinstance(traceparent, str):
            return None
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is None:
            return None
        trace_id, span_id, flags = match.groups()
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        return cls(trace_id, span_id, flags, _valid_state(tracestate))

    @classmethod
    def start(cls, *, sampled: bool = False) -> TraceContext:
        """A new trace, for a request that came without one."""
        while (trace_id := secrets.token_hex(16)) == _ZERO_TRACE:
            pass
        return cls(trace_id, _new_span_id(), SAMPLED if sampled else NOT_SAMPLED)

    def child(self, span_id: str | None = None) -> TraceContext:
        """The same trace, one hop on: `span_id` (a new random one if not given) is now
        the parent of whatever comes next."""
        return replace(self, span_id=span_id or _new_span_id())

    @classmethod
    def of_span(cls, span: Any, state: str | None = None) -> TraceContext:
        """The position of an OpenTelemetry span (its trace, its span id), with `state`."""
        context = span.get_span_context()
        return cls(
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            f"{int(context.trace_flags):02x}",
            state,
        )

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def headers(self) -> dict[str, str]:
        """As AMQP (or HTTP) headers: `traceparent`, and `tracestate` if there is one."""
        headers = {HEADER_TRACEPARENT: self.traceparent}
        if self.state:
            headers[HEADER_TRACESTATE] = self.state
        return headers


def _valid_state(tracestate: object) -> str | None:
    if isinstance(tracestate, bytes):
        tracestate = tracestate.decode("ascii", "replace")
    if not isinstance(tracestate, str):
        return None
    tracestate = tracestate.strip()
    if not tracestate or len(tracestate) > MAX_TRACESTATE or not _TRACESTATE.fullmatch(tracestate):
        return None
    return tracestate


def continue_or_start(
    traceparent: object, tracestate: object = None, *, sampled: bool = False
) -> TraceContext:
    """The caller's trace if its headers are valid, else a new one."""
    return TraceContext.parse(traceparent, tracestate) or TraceContext.start(sampled=sampled)


def otel_context(trace: TraceContext | None) -> Any:
    """An OpenTelemetry context whose parent span is `trace` (a span of another process),
    or None. Imports OpenTelemetry, so call it only where it is installed."""
    if trace is None:
        return None
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    state = TraceState.from_header([trace.state]) if trace.state else None
    context = SpanContext(
        int(trace.trace_id, 16),
        int(trace.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(trace.flags, 16)),
        trace_state=state,
    )
    return set_span_in_context(NonRecordingSpan(context))
