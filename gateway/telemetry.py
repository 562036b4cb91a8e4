"""Optional OpenTelemetry export of a job's journey through the gateway, as spans of the
trace its client started (or the gateway did).

Off by default: the gateway then imports nothing of OpenTelemetry, and passes the client's
`traceparent` to the worker unchanged. It is on when the standard variables ask for an
exporter (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` wins) and the `otel` extra
is installed (`pip install 'amqp-http-gateway[otel]'`). The exporter itself reads the rest
(`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).

The spans, all of one trace:
- `POST /v1/ops/{op}` (server): the HTTP request, a child of the client's span;
- `publish {op}` (producer): storing the job and RabbitMQ's confirm; the request message's
  `traceparent` names this span, so the worker's spans are its children;
- `wait {op}`: the job in the queue, from its creation to its `started` answer;
- `run {op}`: the worker's run, from `started` (or, for a quick job that sends none, from
  the job's creation) to its final answer; linked to the worker's own span, which its
  answers' `traceparent` names;
- `deliver {op}`: from the job's end to the moment a client is answered with it.
The last three are made from the job's timestamps when the answer arrives (any instance
may take it), so they need nothing kept in memory between requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from gateway.jobs import Event, Job
from gateway.trace_context import TraceContext, otel_context
from gateway.types import TERMINAL_EVENTS

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["Telemetry"]

log = logging.getLogger("gateway.telemetry")

EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
OTEL_EXTRA_MISSING = (
    "OpenTelemetry export asked for (OTEL_* variables) but not installed: "
    "pip install 'amqp-http-gateway[otel]'; spans are not exported"
)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Telemetry:
    """The gateway's spans, or nothing at all when `provider` is None (the default)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer: Tracer | None = (
            provider.get_tracer("amqp-http-gateway") if provider is not None else None
        )

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Telemetry:
        """On if the OTEL_* variables ask for an exporter (see the module's docstring)."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter == "none" or not any(environ.get(name) for name in EXPORTER_VARIABLES):
            return cls()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SpanExporter,
            )
        except ImportError:
            log.warning(OTEL_EXTRA_MISSING)
            return cls()
        span_exporter: SpanExporter
        if exporter == "console":
            span_exporter = ConsoleSpanExporter()
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning(OTEL_EXTRA_MISSING)
                return cls()
            span_exporter = OTLPSpanExporter()
        # The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself.
        service = environ.get("OTEL_SERVICE_NAME") or "amqp-http-gateway"
        provider = SdkTracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
        return cls(provider)

    def shutdown(self) -> None:
        """Flush what is buffered (at the gateway's stop)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # -- the request: live spans -------------------------------------------------------

    # Both context managers are on every submit's path: when off, a nullcontext (no
    # generator, no OpenTelemetry import) is all they cost.

    def serving(
        self, route: str, client: TraceContext | None
    ) -> AbstractContextManager[TraceContext | None]:
        """Around an HTTP request that submits: its span, a child of the client's. Gives
        the trace the work inside continues: the client's as it came, when off."""
        if self._tracer is None:
            return contextlib.nullcontext(client)
        return self._serving(self._tracer, route, client)

    def publishing(
        self, op: str, parent: TraceContext | None
    ) -> AbstractContextManager[tuple[TraceContext, Span | None]]:
        """Around storing a job and publishing its request, inside `serving`: gives the
        trace the request message carries (`parent` unchanged when off; a new trace if
        there is none) and the publish span, to name the job on (None when off)."""
        if self._tracer is None:
            return contextlib.nullcontext((parent or TraceContext.start(), None))
        return self._publishing(self._tracer, op, parent)

    @staticmethod
    @contextlib.contextmanager
    def _serving(
        tracer: Tracer, route: str, client: TraceContext | None
    ) -> Iterator[TraceContext | None]:
        from opentelemetry.trace import SpanKind

        method, _, path = route.partition(" ")
        with tracer.start_as_current_span(
            route,
            context=otel_context(client),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": path},
        ) as span:
            yield TraceContext.of_span(span, client.state if client is not None else None)

    @staticmethod
    @contextlib.contextmanager
    def _publishing(
        tracer: Tracer, op: str, parent: TraceContext | None
    ) -> Iterator[tuple[TraceContext, Span | None]]:
        from opentelemetry.trace import SpanKind

        # A child of the current span (the request's, from `serving`).
        with tracer.start_as_current_span(
            f"publish {op}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "publish",
                "messaging.destination.name": op,
            },
        ) as span:
            yield TraceContext.of_span(span, parent.state if parent is not None else None), span

    @staticmethod
    def name_job(span: Span | None, job: Job) -> None:
        if span is not None:
            span.set_attribute("messaging.message.id", job.id)
            span.set_attribute("gateway.job.id", job.id)

    # -- from the job's timestamps, when answers arrive ---------------------------------

    def answered(
        self, job: Job, event: Event, worker: TraceContext | None, started_at: float | None
    ) -> None:
        """A worker's answer became `event`: end the queue wait at `started`, the run at
        the final answer (`started_at`: when it began, None if it sent no `started`)."""
        if self._tracer is None or job.traceparent is None:
            return
        parent = TraceContext.parse(job.traceparent, job.tracestate)
        if event.type == "started":
            self._span(f"wait {job.op}", parent, job, job.created_at, event.time, worker)
        elif event.type in TERMINAL_EVENTS:
            self._span(
                f"run {job.op}",
                parent,
                job,
                started_at if started_at is not None else job.created_at,
                event.time,
                worker,
                {"gateway.job.status": job.status, "gateway.job.started": started_at is not None},
            )

    def delivered(self, job: Job) -> None:
        """A client has been answered with the finished `job`."""
        if self._tracer is None or job.traceparent is None or not job.terminal:
            return
        parent = TraceContext.parse(job.traceparent, job.tracestate)
        self._span(f"deliver {job.op}", parent, job, job.updated_at, time.time(), None)

    def _span(
        self,
        name: str,
        parent: TraceContext | None,
        job: Job,
        start: float,
        end: float,
        worker: TraceContext | None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        assert self._tracer is not None
        from opentelemetry.trace import Link

        links = []
        if worker is not None and parent is not None and worker.trace_id == parent.trace_id:
            remote = otel_context(worker)
            from opentelemetry.trace import get_current_span

            links.append(Link(get_current_span(remote).get_span_context()))
        span = self._tracer.start_span(
            name,
            context=otel_context(parent),
            start_time=_ns(start),
            links=links,
            attributes={"gateway.job.id": job.id, "gateway.op": job.op, **(attributes or {})},
        )
        span.end(end_time=_ns(max(end, start)))
