"""W3C Trace Context from the HTTP request, through the request message's AMQP headers, to
the worker and back on its answers; and the optional OpenTelemetry spans, exported to the
SDK's in-memory exporter, one trace from the gateway's HTTP span to the worker's span.

The Perl worker's side is in tests/test_perl_worker.py, the JavaScript one's in
tests/test_js_worker.py (each kit as a real process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Telemetry
from gateway.trace_context import TraceContext
from gateway.worker import JobContext, Worker
from tests.support import RabbitNode, make_settings, serve_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def contract() -> dict[str, object]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"request": {"type": "object"}, "result": {"type": "object"}},
    }


@pytest.mark.parametrize(
    "header",
    [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a version we don't know
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "",
        None,
        17,
    ],
)
def test_a_malformed_traceparent_is_no_trace(header: object) -> None:
    assert TraceContext.parse(header) is None


def test_a_trace_is_parsed_continued_and_written_back() -> None:
    trace = TraceContext.parse(TRACEPARENT.encode(), TRACESTATE)  # AMQP may give bytes
    assert trace == TraceContext(TRACE_ID, CLIENT_SPAN, "01", TRACESTATE)
    assert trace.traceparent == TRACEPARENT and trace.sampled
    child = trace.child()
    assert (child.trace_id, child.flags, child.state) == (TRACE_ID, "01", TRACESTATE)
    assert child.span_id != CLIENT_SPAN
    assert child.headers() == {"traceparent": child.traceparent, "tracestate": TRACESTATE}
    # A tracestate past the spec's 512 characters, or with control characters, is dropped.
    assert TraceContext.parse(TRACEPARENT, "a=" + "b" * 600).state is None  # type: ignore[union-attr]
    assert TraceContext.parse(TRACEPARENT, "a=b\r\nX: y").state is None  # type: ignore[union-attr]
    started = TraceContext.start()
    assert TraceContext.parse(started.traceparent) == started and not started.sampled


class Seen:
    """What the worker's handler saw of each job: its AMQP headers and its trace."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobContext] = {}

    async def handler(self, request: Any, job: JobContext) -> Any:
        self.jobs[job.id] = job
        return request


async def test_the_client_trace_reaches_the_python_worker_unchanged(
    rabbit: RabbitNode, tmp_path: Any, run_worker: Any
) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url, {"traced": contract()})
    seen = Seen()
    async with serve_gateway(settings, ops) as gw:
        worker = Worker(rabbit.url)
        worker.operation(gw.op("traced"))(seen.handler)
        await run_worker(worker)
        async with gw.client() as http:
            r = await http.post(
                f"/v1/ops/{gw.op('traced')}?wait=10",
                json={"n": 1},
                headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
            )
            untraced = await http.post(f"/v1/ops/{gw.op('traced')}?wait=10", json={"n": 2})
            bad = await http.post(
                f"/v1/ops/{gw.op('traced')}?wait=10",
                json={"n": 3},
                headers={"traceparent": "00-xyz-0-01"},
            )
            fetched = await http.get(r.headers["location"])
    job = r.json()
    assert job["status"] == "succeeded" and job["trace_id"] == TRACE_ID
    assert fetched.json()["trace_id"] == TRACE_ID
    traced = seen.jobs[job["id"]]
    # The request message carries the client's headers unchanged (telemetry is off).
    assert traced.headers["traceparent"] == TRACEPARENT
    assert traced.headers["tracestate"] == TRACESTATE
    # The worker continues it: same trace and flags, a span id of its own.
    assert traced.trace is not None and traced.trace_id == TRACE_ID
    assert traced.trace.span_id != CLIENT_SPAN and traced.trace.flags == "01"
    # No (valid) header: the gateway starts a trace, and the worker continues that.
    for response in (untraced, bad):
        body = response.json()
        assert len(body["trace_id"]) == 32 and body["trace_id"] != TRACE_ID
        headers = seen.jobs[body["id"]].headers
        assert TraceContext.parse(headers["traceparent"]).trace_id == body["trace_id"]  # type: ignore[union-attr]
        assert "tracestate" not in headers


async def test_one_trace_across_the_gateways_spans_and_the_workers(
    rabbit: RabbitNode, tmp_path: Any, run_worker: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings, ops = make_settings(tmp_path, rabbit.url, {"traced": contract()})
    async with serve_gateway(settings, ops, telemetry=Telemetry(provider)) as gw:
        op = gw.op("traced")
        worker = Worker(rabbit.url, tracer_provider=provider)

        @worker.operation(op, long_running=True)
        async def run(request: Any, job: JobContext) -> Any:
            await job.progress({"step": 1})
            await asyncio.sleep(0)  # a moment of "work"
            return request

        await run_worker(worker)
        async with gw.client() as http:
            r = await http.post(
                f"/v1/ops/{op}?wait=10",
                json={"n": 1},
                headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
            )
    job = r.json()
    assert job["status"] == "succeeded", job
    spans = {span.name: span for span in exporter.get_finished_spans()}
    names = {
        "POST /v1/ops/{op}",
        f"publish {op}",
        f"process {op}",  # the worker's own span
        f"wait {op}",
        f"run {op}",
        f"deliver {op}",
    }
    assert names <= spans.keys(), sorted(spans)
    # One trace: the client's.
    assert {f"{span.context.trace_id:032x}" for span in spans.values()} == {TRACE_ID}
    assert job["trace_id"] == TRACE_ID

    def parent(name: str) -> int | None:
        span: ReadableSpan = spans[name]
        return span.parent.span_id if span.parent is not None else None

    http_span, publish = spans["POST /v1/ops/{op}"], spans[f"publish {op}"]
    assert parent("POST /v1/ops/{op}") == int(CLIENT_SPAN, 16)
    assert parent(f"publish {op}") == http_span.context.span_id
    # The request message named the publish span: the worker's span is its child ...
    assert parent(f"process {op}") == publish.context.span_id
    for name in (f"wait {op}", f"run {op}", f"deliver {op}"):
        assert parent(name) == publish.context.span_id, name
    # ... and its answers named the worker's span, which the gateway's run span links to.
    worker_span = spans[f"process {op}"]
    assert [link.context.span_id for link in spans[f"run {op}"].links] == [
        worker_span.context.span_id
    ]
    assert spans[f"wait {op}"].end_time <= spans[f"run {op}"].start_time  # type: ignore[operator]
    assert publish.context.trace_state.get("congo") == "t61rcWkgMzE"  # tracestate kept


def test_telemetry_is_off_unless_the_environment_asks() -> None:
    assert not Telemetry.from_environment({}).enabled
    assert not Telemetry.from_environment({"OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not Telemetry.from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}
    ).enabled
    on = Telemetry.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert on.enabled
    on.shutdown()
