"""A gateway that cannot be reached: `gateway call` says so in one line with its own exit
status (3), and the Python client's `events()` stops retrying after `reconnect_timeout`
seconds with `GatewayUnreachable`, backing off in between."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.client import RECONNECT_FIRST_WAIT, AsyncClient, GatewayUnreachable
from tests.support import RunningGateway, TcpProxy, free_port

RECONNECT_LIMIT = 3.0  # seconds; short, to keep the test quick


def test_gateway_call_to_a_closed_port_exits_3_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "call", "math.add", '{"a": 1, "b": 2}', "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"gateway: cannot reach the gateway at {url}: ")


def test_gateway_call_help_documents_the_exit_statuses() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "call", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "3  the gateway could not be reached" in run.stdout


async def test_events_give_up_when_the_gateway_goes_away_mid_stream(
    gateway: RunningGateway,
) -> None:
    stream_requests: list[float] = []

    class CountingTransport(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/events"):
                stream_requests.append(time.monotonic())
            return await super().handle_async_request(request)

    port = urlsplit(gateway.url).port
    assert port is not None
    async with TcpProxy(port) as proxy:
        client = AsyncClient(
            proxy.url, reconnect_timeout=RECONNECT_LIMIT, transport=CountingTransport()
        )
        # No worker serves it: the job stays queued and its stream stays open.
        job = await client.submit(gateway.op("math.add"), {"a": 1, "b": 2})
        stream = client.events(job["id"])
        first = await anext(stream)
        assert first.type == "queued"
    # The proxy has gone, listener and connections: the gateway is unreachable.
    try:
        went_away = time.monotonic()
        with pytest.raises(GatewayUnreachable) as gave_up:
            await asyncio.wait_for(anext(stream), RECONNECT_LIMIT + 5)
        elapsed = time.monotonic() - went_away
    finally:
        await stream.aclose()
        await client.aclose()
    assert elapsed <= RECONNECT_LIMIT + 1, f"gave up after {elapsed:.1f} s"
    retries = stream_requests[1:]  # after the first stream, which the proxy carried
    assert len(retries) >= 3, f"{len(retries)} attempts"
    gaps = [later - earlier for earlier, later in itertools.pairwise(retries)]
    assert all(gap >= RECONNECT_FIRST_WAIT for gap in gaps), gaps  # backed off
    assert gaps == sorted(gaps), gaps  # and longer each time
    assert isinstance(gave_up.value.__cause__, httpx.ConnectError)
    assert str(gave_up.value).startswith(f"cannot reach the gateway at {proxy.url}: ")


async def test_gateway_call_whose_timeout_runs_out_exits_4_with_one_line(
    gateway: RunningGateway,
) -> None:
    """No worker serves the operation: the job is still queued when --timeout runs out."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "call", gateway.op("math.add"), '{"a": 1, "b": 2}'],
        *["--url", gateway.url, "--timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 4
    assert stdout == b""
    assert stderr.decode().splitlines() == ["gateway: the job did not end within 1 s"]
