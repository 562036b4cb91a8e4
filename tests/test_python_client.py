"""The Python client (`gateway.client`) and `gateway call`, against real gateways."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import asdict
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

import gateway.client
from gateway._sse import SSEParser
from gateway.client import AsyncClient, Client, JobEvent, JobUnsuccessful, RequestRefused
from gateway.types import JSON
from tests.polyglot import Polyglot
from tests.support import ROOT, TcpProxy
from tests.test_plain_rpc_worker import rpc_tutorial_server

SSE_VECTORS = orjson.loads((ROOT / "schemas/vectors/sse-frames.json").read_bytes())["cases"]


def test_public_api_is_what_all_says() -> None:
    assert sorted(gateway.client.__all__) == [
        "AsyncClient",
        "Client",
        "GatewayUnreachable",
        "JobEvent",
        "JobUnsuccessful",
        "RequestRefused",
        "TopicMessage",
    ]
    for name in gateway.client.__all__:
        assert hasattr(gateway.client, name)


def test_client_names_are_not_the_server_s() -> None:
    """One name, one meaning: no client class shares a name with a server or worker one;
    the old client names still work for now, with a DeprecationWarning."""
    import gateway.errors
    import gateway.jobs
    import gateway.worker

    others = set(dir(gateway.errors)) | set(dir(gateway.jobs)) | set(dir(gateway.worker))
    assert not {n for n in gateway.client.__all__ if n[0].isupper()} & others
    for old, new in (
        ("GatewayError", RequestRefused),
        ("JobFailed", JobUnsuccessful),
        ("Event", JobEvent),
    ):
        with pytest.warns(DeprecationWarning, match=new.__name__):
            assert getattr(gateway.client, old) is new


@pytest.mark.parametrize("case", SSE_VECTORS, ids=[c["description"] for c in SSE_VECTORS])
def test_sse_parser_vectors(case: dict) -> None:
    whole = [asdict(e) for e in SSEParser().feed(case["stream"])]
    parser = SSEParser()  # and fed one character at a time, as a network may split it
    split = [asdict(e) for ch in case["stream"] for e in parser.feed(ch)]
    assert whole == case["events"]
    assert split == whole


async def test_call_submit_job_and_errors(polyglot: Polyglot) -> None:
    async with AsyncClient(polyglot.gateway.url) as gw:
        assert await gw.call("math.add", {"a": 2, "b": 3}) == {"sum": 5}
        job = await gw.submit("math.add", {"a": 1, "b": 1})
        assert job["status"] in ("queued", "succeeded")
        done = await gw.job(job["id"], wait=10)
        assert done["result"] == {"sum": 2}
        with pytest.raises(RequestRefused) as unknown:
            await gw.submit("no.such.op", {})
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_op")
        with pytest.raises(RequestRefused) as invalid:
            await gw.submit("math.add", {"a": "x", "b": 1})
        assert invalid.value.code == "invalid_request"
        assert invalid.value.details[0]["path"] == "/a"
        assert {o["op"] for o in await gw.ops()} >= {"math.add", "report.generate"}


async def test_validation_refuses_before_sending(polyglot: Polyglot) -> None:
    sent: list[str] = []

    class CountingTransport(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(f"{request.method} {request.url.path}")
            return await super().handle_async_request(request)

    async with AsyncClient(
        polyglot.gateway.url, validate=True, transport=CountingTransport()
    ) as gw:
        with pytest.raises(RequestRefused) as caught:
            await gw.submit("math.add", {"a": 1})
        assert caught.value.code == "invalid_request"
        assert caught.value.details[0]["path"] == ""
        assert sent == ["GET /v1/ops/math.add"]  # the contract, and nothing else
        assert await gw.call("math.add", {"a": 1, "b": 2}) == {"sum": 3}


async def test_call_reports_progress_and_failure(polyglot: Polyglot) -> None:
    seen: list[dict] = []
    async with AsyncClient(polyglot.gateway.url) as gw:
        result = await gw.call(
            "report.generate",
            {"title": "T", "sections": 3, "seconds_per_section": 0},
            on_progress=seen.append,
        )
        assert len(result["sections"]) == 3
        assert [p["done"] for p in seen] == [1, 2, 3]
        job = await gw.submit(
            "report.generate", {"title": "T", "sections": 50, "seconds_per_section": 1}
        )
        await gw.job(job["id"], wait=10, after=1)
        cancelled = await gw.cancel(job["id"])
        assert cancelled["status"] == "cancelled"
        with pytest.raises(JobUnsuccessful) as failed:
            await gw.call(
                "report.generate",
                {"title": "T", "sections": 50, "seconds_per_section": 1},
                deadline_seconds=0.5,
                timeout=30,
            )
        assert failed.value.code == "expired"
        assert failed.value.job["status"] == "expired"


async def test_events_resume_across_a_dropped_connection(polyglot: Polyglot) -> None:
    port = urlsplit(polyglot.gateway.url).port
    assert port is not None
    async with TcpProxy(port) as proxy, AsyncClient(proxy.url) as gw:
        job = await gw.submit(
            "report.generate", {"title": "T", "sections": 4, "seconds_per_section": 0.3}
        )
        seqs, types = [], []
        async for event in gw.events(job["id"]):
            seqs.append(event.seq)
            types.append(event.type)
            if event.type == "progress" and event.data["done"] == 1:
                proxy.cut()  # mid-job; the client resumes by Last-Event-ID
        assert proxy.connections >= 2
    assert seqs == list(range(1, len(seqs) + 1))
    assert types[0] == "queued" and types[-1] == "result"
    assert types.count("progress") == 4


async def test_blocking_client(polyglot: Polyglot) -> None:
    def use_blocking_client() -> tuple[JSON, list[str]]:
        with Client(polyglot.gateway.url) as gw:
            echoed = gw.call("echo", {"x": [1, 2]})
            job = gw.submit(
                "report.generate", {"title": "T", "sections": 2, "seconds_per_section": 0}
            )
            return echoed, [e.type for e in gw.events(job["id"])]

    # In a thread: this test's event loop serves the gateway meanwhile.
    echoed, events = await asyncio.to_thread(use_blocking_client)
    assert echoed == {"x": [1, 2]}
    assert events[0] == "queued" and events[-1] == "result"


async def test_calls_a_plain_rpc_tutorial_worker(gateway, rabbit) -> None:
    op = gateway.op("math.add")
    async with rpc_tutorial_server(op, rabbit.url), AsyncClient(gateway.url, validate=True) as gw:
        assert await gw.call(op, {"a": 40, "b": 2}) == {"sum": 42}


async def test_gateway_call_cli(polyglot: Polyglot) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "call", *args, "--url", polyglot.gateway.url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok, refused, report = await asyncio.gather(
        asyncio.to_thread(run, "math.add", '{"a": 2, "b": 3}'),
        asyncio.to_thread(run, "math.add", '{"a": 2}'),
        asyncio.to_thread(
            run, "report.generate", '{"title": "T", "sections": 2, "seconds_per_section": 0}'
        ),
    )
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout) == {"sum": 5}
    assert refused.returncode == 2
    assert orjson.loads(refused.stderr)["error"]["code"] == "invalid_request"
    assert report.returncode == 0, report.stderr
    assert "progress" in report.stderr
    assert len(orjson.loads(report.stdout)["sections"]) == 2
