"""deploy/nginx/gateway.conf, for real: a private nginx running that file in front of a
test gateway carries long-polls until the job ends, streams events as they happen (not
buffered until the end), resumes streams by Last-Event-ID, and keeps its connections to
the gateway alive."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from gateway.config import Settings
from gateway.worker import Worker
from tests.nginx_support import (
    GATEWAY_CONF,
    INSTALL_HINT,
    RunningNginx,
    check_conf,
    nginx_binary,
    run_nginx,
)
from tests.support import RunningGateway, TcpProxy, free_port

SSE = {"Accept": "text/event-stream"}
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    return binary


def upstream_of(gateway: RunningGateway) -> str:
    return urlsplit(gateway.url).netloc


@pytest.fixture
async def nginx(
    nginx_bin: str, gateway: RunningGateway, tmp_path: Path
) -> AsyncIterator[RunningNginx]:
    async with run_nginx(nginx_bin, tmp_path / "nginx", [upstream_of(gateway)]) as running:
        yield running


def through(nginx: RunningNginx) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=nginx.url, timeout=60)


def directives(text: str) -> str:
    """The config without its comments."""
    return re.sub(r"#[^\n]*", "", text)


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def test_nginx_accepts_the_deploy_config(nginx_bin: str, tmp_path: Path) -> None:
    result = check_conf(nginx_bin, tmp_path, GATEWAY_CONF.read_text())
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_config_fits_the_gateways_limits() -> None:
    text = directives(GATEWAY_CONF.read_text())
    defaults = Settings()
    # Every read timeout outlasts the longest long-poll and the gap between SSE pings.
    timeouts = [seconds(v) for v in re.findall(r"proxy_read_timeout\s+(\w+);", text)]
    assert timeouts
    assert min(timeouts) > max(defaults.max_wait_seconds, defaults.sse_ping_seconds)
    events = re.search(
        r"location ~ \^/v1/\(jobs\|topics\)/\[\^/\]\+/events\$ \{(.*?)\}", text, re.S
    )
    assert events, "no location for the event streams"
    assert re.search(r"proxy_buffering\s+off;", events.group(1))
    assert re.search(r"gzip\s+off;", events.group(1))
    stream_timeout = re.search(r"proxy_read_timeout\s+(\w+);", events.group(1))
    assert stream_timeout and seconds(stream_timeout.group(1)) >= 4 * defaults.sse_ping_seconds
    body = re.search(r"client_max_body_size\s+(\d+)([km]?);", text)
    assert body
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[body.group(2)]
    assert int(body.group(1)) * scale == defaults.max_body_bytes
    assert re.search(r"proxy_http_version\s+1\.1;", text)
    assert re.search(r'proxy_set_header\s+Connection\s+"";', text)
    assert re.search(r"^\s*keepalive\s+\d+;", text, re.M)


def stepped_reporter(gateway: RunningGateway, rabbit_url: str, steps: list[asyncio.Event]):
    """A report worker that sends progress n, then waits for steps[n-1] before going on."""
    worker = Worker(rabbit_url)

    @worker.operation(gateway.op("report.generate"))
    async def generate(request, job):
        for n, step in enumerate(steps, 1):
            await job.progress({"done": n, "total": len(steps)})
            await step.wait()
        return {"title": request["title"], "sections": [str(n) for n in range(len(steps))]}

    return worker


async def test_events_stream_through_nginx_as_they_happen_and_resume(
    gateway, rabbit, run_worker, nginx
):
    steps = [asyncio.Event(), asyncio.Event()]
    await run_worker(stepped_reporter(gateway, rabbit.url, steps))
    seen: list[tuple[int, str]] = []
    async with through(nginx) as http, gateway.client() as direct, asyncio.timeout(60):
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}", json={"title": "T"})
        assert r.status_code == 202
        job_url = r.headers["location"]
        async with aconnect_sse(http, "GET", f"{job_url}/events", headers=SSE) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            async for sse in source.aiter_sse():
                if not sse.id:
                    continue
                seen.append((int(sse.id), sse.event))
                if sse.event != "progress":
                    continue
                if sse.json()["done"] == 1:
                    # Through nginx while the worker still holds the job: not buffered.
                    job = (await direct.get(job_url)).json()
                    assert job["status"] not in TERMINAL and "result" not in job
                    steps[0].set()  # the worker goes on only now
                else:
                    break  # progress 2 came live too; the client drops the stream
        # Resume through nginx (any instance would do) from the last event seen; the job
        # ends only once the new stream is open, so its end arrives live as well.
        resume = {**SSE, "Last-Event-ID": str(seen[-1][0])}
        async with aconnect_sse(http, "GET", f"{job_url}/events", headers=resume) as source:
            steps[1].set()
            rest = [(int(s.id), s.event, s.data) async for s in source.aiter_sse() if s.id]
    assert seen == [(1, "queued"), (2, "progress"), (3, "progress")]
    assert [(n, kind) for n, kind, _ in rest] == [(4, "result")]  # then the stream ended
    assert orjson.loads(rest[0][2]) == {"title": "T", "sections": ["0", "1"]}


@contextmanager
def noticing_waits(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> Iterator[asyncio.Event]:
    """An event set once a request waits in the gateway for a job (a long-poll arrived)."""
    hub = gateway.service.hub
    watch = hub.watch
    waiting = asyncio.Event()

    @contextmanager
    def noticed(job_id: str):  # type: ignore[no-untyped-def]
        with watch(job_id) as w:
            waiting.set()
            yield w

    monkeypatch.setattr(hub, "watch", noticed)
    yield waiting


async def test_long_poll_through_nginx_returns_when_the_job_ends(
    gateway, rabbit, run_worker, nginx, monkeypatch
):
    finish = asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(gateway.op("math.add"))
    async def add(request, job):
        await finish.wait()
        return {"sum": request["a"] + request["b"]}

    await run_worker(worker)
    async with through(nginx) as http, asyncio.timeout(60):
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": 2, "b": 3})
        assert r.status_code == 202
        with noticing_waits(gateway, monkeypatch) as waiting:
            poll = asyncio.create_task(http.get(f"{r.headers['location']}?wait=50"))
            try:
                await waiting.wait()  # the poll went through nginx and waits in the gateway
                assert not poll.done()
                finish.set()
                answer = await poll
            finally:
                poll.cancel()
    assert answer.status_code == 200
    job = answer.json()
    assert (job["status"], job["result"]) == ("succeeded", {"sum": 5})


async def test_nginx_keeps_connections_to_the_gateway_alive(gateway, nginx_bin, tmp_path):
    async with (
        TcpProxy(int(upstream_of(gateway).rsplit(":", 1)[1])) as proxy,
        run_nginx(nginx_bin, tmp_path / "nginx", [f"127.0.0.1:{proxy.port}"]) as nginx,
    ):
        for _ in range(5):
            async with through(nginx) as http:  # a new client connection each time
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/v1/ops")).status_code == 200
    assert proxy.connections == 1


async def test_nginx_errors_are_json(nginx_bin, tmp_path):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with run_nginx(nginx_bin, tmp_path / "nginx", [dead]) as nginx, through(nginx) as http:
        down = await http.get("/v1/ops")
        too_large = await http.post(
            "/v1/ops/math.add",
            content=b"{" + b" " * (1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert down.json()["error"]["code"] == "gateway_unavailable"
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
