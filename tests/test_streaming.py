"""Server-Sent Events: replay then live, resume by Last-Event-ID, heartbeats, the end."""

from __future__ import annotations

import asyncio

import orjson
from httpx_sse import aconnect_sse

from gateway.worker import Worker
from tests.support import RunningGateway, make_settings, serve_gateway

SSE = {"Accept": "text/event-stream"}


def stepped_reporter(gateway: RunningGateway, rabbit_url: str, steps: list[asyncio.Event]):
    """A report worker that sends progress n only once steps[n-1] is set."""
    worker = Worker(rabbit_url)

    @worker.operation(gateway.op("report.generate"))
    async def generate(request, job):
        for n, step in enumerate(steps, 1):
            await step.wait()
            await job.progress({"done": n, "total": len(steps)})
        return {"title": request["title"], "sections": [str(n) for n in range(len(steps))]}

    return worker


async def test_every_event_exactly_once_across_a_reconnect(gateway, rabbit, run_worker):
    steps = [asyncio.Event() for _ in range(4)]
    await run_worker(stepped_reporter(gateway, rabbit.url, steps))
    seen: list[tuple[int, str]] = []
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}", json={"title": "T"})
        events_url = f"{r.headers['location']}/events"
        async with aconnect_sse(http, "GET", events_url, headers=SSE) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers["x-accel-buffering"] == "no"
            assert "no-cache" in source.response.headers["cache-control"]
            stream = source.aiter_sse()
            steps[0].set()
            steps[1].set()
            async for sse in stream:
                if sse.id:
                    seen.append((int(sse.id), sse.event))
                if sse.id == "3":  # queued, progress 1, progress 2: then the client drops
                    break
        # While the client is away the job moves on.
        steps[2].set()
        last_id = str(seen[-1][0])
        steps[3].set()
        async with aconnect_sse(
            http, "GET", events_url, headers={**SSE, "Last-Event-ID": last_id}
        ) as source:
            async for sse in source.aiter_sse():  # ends by itself after the terminal event
                if sse.id:
                    seen.append((int(sse.id), sse.event))
                    data = orjson.loads(sse.data)
                    if sse.event == "progress":
                        assert data["done"] == int(sse.id) - 1
    assert seen == [
        (1, "queued"),
        (2, "progress"),
        (3, "progress"),
        (4, "progress"),
        (5, "progress"),
        (6, "result"),
    ]


async def test_after_query_for_the_first_connect(gateway, rabbit, run_worker):
    steps = [asyncio.Event() for _ in range(2)]
    for step in steps:
        step.set()
    await run_worker(stepped_reporter(gateway, rabbit.url, steps))
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}?wait=10", json={"title": "T"})
        assert r.json()["status"] == "succeeded"
        url = f"{r.headers['location']}/events?after=2"
        async with aconnect_sse(http, "GET", url, headers=SSE) as source:
            frames = [s async for s in source.aiter_sse() if s.id]
        # Last-Event-ID wins over ?after (a browser's reconnect keeps its first URL).
        async with aconnect_sse(http, "GET", url, headers={**SSE, "Last-Event-ID": "3"}) as s2:
            resumed = [s async for s in s2.aiter_sse() if s.id]
    assert [(f.id, f.event) for f in frames] == [("3", "progress"), ("4", "result")]
    assert orjson.loads(frames[-1].data) == {"title": "T", "sections": ["0", "1"]}
    assert [(f.id, f.event) for f in resumed] == [("4", "result")]


async def test_retry_hint_and_heartbeats_on_an_idle_stream(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url, sse_ping_seconds=0.2, sse_retry_ms=1500)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        lines: list[str] = []
        async with http.stream("GET", f"{r.headers['location']}/events", headers=SSE) as resp:
            async with asyncio.timeout(10):  # no worker: only heartbeats can arrive
                async for line in resp.aiter_lines():
                    lines.append(line)
                    if sum(1 for x in lines if x.startswith(": ping")) >= 2:
                        break
    assert "retry: 1500" in lines
    assert "id: 1" in lines and "event: queued" in lines


async def test_stream_of_a_finished_job_replays_and_ends(gateway, rabbit, run_worker):
    from tests.test_round_trip import adder

    await run_worker(adder(gateway, rabbit.url))
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 1, "b": 2})
        url = f"{r.headers['location']}/events"
        async with asyncio.timeout(10):
            async with aconnect_sse(http, "GET", url, headers=SSE) as source:
                frames = [(s.id, s.event, s.data) async for s in source.aiter_sse() if s.id]
            # A client that already has the terminal event gets 204: a browser's
            # EventSource stops reconnecting on it.
            after_end = await http.get(url, headers={**SSE, "Last-Event-ID": "2"})
    assert frames == [("1", "queued", "null"), ("2", "result", '{"sum":3}')]
    assert after_end.status_code == 204


async def test_stream_errors_are_json(gateway):
    async with gateway.client() as http:
        missing = await http.get("/v1/jobs/nope/events", headers=SSE)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "job_not_found"
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": 1, "b": 2})
        bogus = await http.get(
            f"{r.headers['location']}/events", headers={**SSE, "Last-Event-ID": "yesterday"}
        )
        assert bogus.status_code == 400
        assert bogus.json()["error"]["code"] == "invalid_parameter"


async def test_long_poll_and_stream_share_one_cursor(gateway, rabbit, run_worker):
    steps = [asyncio.Event() for _ in range(2)]
    await run_worker(stepped_reporter(gateway, rabbit.url, steps))
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}", json={"title": "T"})
        events_url = f"{r.headers['location']}/events"
        steps[0].set()
        page = (await http.get(f"{events_url}?after=1&wait=30")).json()
        assert [e["type"] for e in page["events"]] == ["progress"]
        steps[1].set()
        async with aconnect_sse(
            http, "GET", f"{events_url}?after={page['next']}", headers=SSE
        ) as source:
            rest = [int(s.id) async for s in source.aiter_sse() if s.id]
    assert rest == [3, 4]
