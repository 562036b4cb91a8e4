"""Hostile connections against a real `gateway serve` process: huge headers, slowloris,
idle connections, slow bodies, and an oversized body from a client that sends before it
reads. Each must be answered (431, 408, 413: the JSON error body) or closed within its
bound, while `/readyz` stays quick and the gateway's memory stays put. Figures with
`pytest -s`.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from tests.fault_support import GatewayProcess, ReadyzProbe, poll_until, rss_kib
from tests.support import RabbitNode, contracts_for_test, free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
MAX_HEADERS = 32 * 1024
MiB = 1024 * 1024


@pytest.fixture(scope="module")
async def gateway(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("http-limits")
    contracts_for_test(tmp / "contracts", "limits")
    process = GatewayProcess(
        free_port(),
        rabbit.url,
        tmp / "contracts",
        f"sqlite:///{tmp / 'store.sqlite3'}",
        tmp / "gateway.log",
        options=[
            "--header-timeout",
            str(HEADER_TIMEOUT),
            "--body-timeout",
            str(BODY_TIMEOUT),
            "--keep-alive",
            str(KEEP_ALIVE),
            "--max-header-size",
            str(MAX_HEADERS),
        ],
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


def rss_mb(gateway: GatewayProcess) -> float:
    assert gateway.process is not None
    return rss_kib(gateway.process.pid)["VmRSS"] / 1024


@asynccontextmanager
async def readyz_probed(gateway: GatewayProcess) -> AsyncIterator[ReadyzProbe]:
    """`/readyz` probed back to back while the block (an attack) runs: a stalled event
    loop shows as a slow or failed probe."""
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        probe = ReadyzProbe(http)
        probing = asyncio.create_task(probe.run())
        await poll_until(lambda: len(probe.latencies) >= 1)  # probing before it begins
        probe.latencies.clear()
        try:
            yield probe
        finally:
            probed = len(probe.latencies)
            await poll_until(lambda: len(probe.latencies) > probed)  # and as it ends
            probe.stop.set()
            await probing


def check(probe: ReadyzProbe, bound: float = 1.0) -> None:
    assert set(probe.statuses) == {200}, probe.statuses
    assert max(probe.latencies) < bound, f"/readyz took {max(probe.latencies):.3f}s"


async def exchange(port: int, data: bytes, read_within: float = 10) -> bytes:
    """Send `data` on a new connection, then read what comes back until it closes
    (b"RESET" if the connection was reset instead)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass  # the answer may be there all the same
        try:
            async with asyncio.timeout(read_within):
                return await reader.read()
        except ConnectionError:
            return b"RESET"
    finally:
        writer.close()


def status_and_error(response: bytes) -> tuple[int, str]:
    """The status and the JSON error code of a raw HTTP response."""
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), orjson.loads(body)["error"]["code"]


async def test_oversized_headers_get_431_and_cost_no_memory(gateway: GatewayProcess) -> None:
    port = gateway.port
    before = rss_mb(gateway)
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (16 * MiB) + b"\r\n\r\n"
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: aaaaaaaaaaaaaaaa\r\n" * 4000
    async with readyz_probed(gateway) as readyz:
        answers = await asyncio.gather(
            *(exchange(port, huge) for _ in range(4)), exchange(port, many + b"\r\n")
        )
        peak = rss_mb(gateway)
    for answer in answers:
        assert status_and_error(answer) == (431, "headers_too_large")
    # Headers under the limit are served as ever.
    fine = await exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Fine: " + b"a" * (MAX_HEADERS // 2) + b"\r\n\r\n",
    )
    assert fine.startswith(b"HTTP/1.1 200"), fine[:100]
    print(
        f"\n4 x 16 MiB + 4,000 headers: 431 each; RSS {before:.0f} -> {peak:.0f} MB; "
        f"/readyz at worst {max(readyz.latencies) * 1000:.0f} ms"
    )
    check(readyz)
    assert peak - before < 40, f"RSS grew from {before:.0f} to {peak:.0f} MB"


async def test_slowloris_connections_are_answered_408_and_closed(
    gateway: GatewayProcess,
) -> None:
    """Each sends its headers a line every 0.2 s, forever: closed within the bound."""
    count = 300

    async def trickle() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        opened = time.monotonic()
        read = asyncio.ensure_future(reader.read())
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while not read.done():
                writer.write(b"X-Slow: a\r\n")
                await asyncio.wait([read], timeout=0.2)
            return read.result(), time.monotonic() - opened
        finally:
            writer.close()

    before = rss_mb(gateway)
    async with readyz_probed(gateway) as readyz, asyncio.timeout(HEADER_TIMEOUT + 15):
        results = await asyncio.gather(*(trickle() for _ in range(count)))
    slowest = max(seconds for _, seconds in results)
    for answer, _ in results:
        assert status_and_error(answer) == (408, "request_timeout")
    print(
        f"\n{count} slowloris connections: all 408 and closed, the last after "
        f"{slowest:.2f}s (bound {HEADER_TIMEOUT}s); RSS {before:.0f} -> "
        f"{rss_mb(gateway):.0f} MB; /readyz at worst {max(readyz.latencies) * 1000:.0f} ms"
    )
    check(readyz)
    assert slowest < HEADER_TIMEOUT + 3


async def test_idle_connections_are_closed(gateway: GatewayProcess) -> None:
    """Connections that never send a byte, and a kept-alive one gone quiet."""
    count = 1000
    opened = time.monotonic()
    streams = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(count)]
    async with readyz_probed(gateway) as readyz, asyncio.timeout(HEADER_TIMEOUT + 15):
        # Closed without a word: an idle connection may be a browser's spare.
        assert set(await asyncio.gather(*(r.read() for r, _ in streams))) == {b""}
    closed_after = time.monotonic() - opened
    for _, writer in streams:
        writer.close()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), KEEP_ALIVE + 10)
        kept_alive = time.monotonic() - answered
        writer.close()
    assert rest.startswith(b"HTTP/1.1 200")
    print(
        f"\n{count} idle connections closed within {closed_after:.2f}s; a kept-alive "
        f"one after {kept_alive:.2f}s; /readyz at worst {max(readyz.latencies) * 1000:.0f} ms"
    )
    check(readyz)
    assert closed_after < HEADER_TIMEOUT + 5
    assert kept_alive < KEEP_ALIVE + 3


async def test_a_body_that_stops_coming_gets_408(gateway: GatewayProcess) -> None:
    head = (
        b"POST /v1/ops/limits.math.add HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    started = time.monotonic()
    answer = await exchange(gateway.port, head + b'{"a": 1')
    assert status_and_error(answer) == (408, "request_timeout")
    assert time.monotonic() - started < BODY_TIMEOUT + 3


@pytest.mark.parametrize("size", [2 * MiB, 8 * MiB])
async def test_an_oversized_body_gets_413_not_a_reset(gateway: GatewayProcess, size: int) -> None:
    """A client that sends its whole body before reading, and asks to close afterwards
    (as urllib does), must read the 413, not a connection reset."""
    body = b'{"a": "' + b"x" * size + b'"}'
    head = (
        b"POST /v1/ops/limits.math.add HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
    )
    declared = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    chunked = (
        head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n\r\n"
    )
    for request in [declared] * 5 + [chunked] * 5:
        assert status_and_error(await exchange(gateway.port, request)) == (
            413,
            "payload_too_large",
        )

    def with_urllib() -> int:
        request = urllib.request.Request(
            f"{gateway.url}/v1/ops/limits.math.add",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30):
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    assert [await asyncio.to_thread(with_urllib) for _ in range(5)] == [413] * 5


async def test_malformed_http_gets_the_json_error_body(gateway: GatewayProcess) -> None:
    answer = await exchange(gateway.port, b"GARBAGE /\x00 HTTP/9\r\n\r\n")
    assert status_and_error(answer) == (400, "malformed_request")
