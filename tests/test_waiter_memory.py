"""What lets one process hold many idle waiters cheaply keeps every promise: the hub's
shared timers (a sleep never ends early, a notice wakes it, nothing is left behind), and
the event stream that goes on after its request's task returned (gateway/server.py,
gateway/http/sse.py): it ends its response so the connection serves the next request,
answers a pipelined request only after it, drops a client that does not read, and lets
go of a client that left. Streams here run on a real `uvicorn_config` server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.config import Settings
from gateway.http.sse import EventStreamResponse
from gateway.hub import TICK, Hub
from gateway.jobs import new_job
from gateway.server import GatewayHttpProtocol, uvicorn_config
from tests.fault_support import poll_until
from tests.support import make_settings, serve_gateway

SSE = {"Accept": "text/event-stream"}

# -- the hub's timers -----------------------------------------------------------------------


async def test_a_sleep_times_out_never_early_and_a_notice_wakes_it() -> None:
    hub = Hub()
    loop = asyncio.get_running_loop()
    with hub.watch("a") as watch, hub.watch("b") as other:
        watch.arm()
        other.arm()
        started = loop.time()
        assert await watch.sleep(0.1) is False
        assert 0.1 <= loop.time() - started < 0.1 + TICK + 0.2
        sleeping = other.sleep(30)
        job, event = new_job("op")
        hub.notify("b", job, event)
        assert await asyncio.wait_for(sleeping, 1) is True
        assert other.job is job and other.events_after(0) == [event]
        other.arm()
        hub.notify("b", job, event)  # woken while awake: the next sleep returns at once
        assert await asyncio.wait_for(other.sleep(30), 1) is True
    assert hub.waiting == 0


async def test_a_cancelled_sleeper_leaves_nothing_behind() -> None:
    hub = Hub()
    with hub.watch("a") as watch:
        watch.arm()
        sleeper = asyncio.ensure_future(watch.sleep(30))
        await asyncio.sleep(0)
        sleeper.cancel()
    assert hub.waiting == 0
    assert not any(hub._ticks.values())  # its timer slot went with it
    hub.notify("a")  # nobody is woken, nothing fails


# -- the detached event stream, on a bare server ---------------------------------------------


class Frames:
    """A stream's frames: `count` of `size` bytes, then the end; records its own end."""

    def __init__(self, count: int, size: int = 16, pause: float = 0.0) -> None:
        self.count, self.size, self.pause = count, size, pause
        self.closed = asyncio.Event()

    async def frames(self) -> AsyncGenerator[bytes, None]:
        try:
            for n in range(self.count):
                yield f"data: {n}".encode().ljust(self.size - 2, b" ") + b"\n\n"
                if self.pause:
                    await asyncio.sleep(self.pause)
        finally:
            self.closed.set()


@asynccontextmanager
async def stream_server(source: Frames, send_timeout: float = 30) -> AsyncIterator[int]:
    async def stream(request: Request) -> Response:
        return EventStreamResponse(source.frames(), send_timeout=send_timeout)

    async def plain(request: Request) -> Response:
        return PlainTextResponse("next")

    app = Starlette(routes=[Route("/stream", stream), Route("/plain", plain)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn_config(app, Settings(), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


@pytest.mark.parametrize("together", [False, True], ids=["pipelined-later", "pipelined-at-once"])
async def test_a_stream_ends_its_response_and_the_connection_goes_on(
    together: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    detached: list[bool] = []
    detach = GatewayHttpProtocol.detach_response

    def recording(self: GatewayHttpProtocol, scope: MutableMapping[str, Any]) -> bool:
        detached.append(detach(self, scope))
        return detached[-1]

    monkeypatch.setattr(GatewayHttpProtocol, "detach_response", recording)
    source = Frames(3, pause=0.05)
    async with stream_server(source) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            # At once: both requests come in one read (the stream stays in its request's
            # task); later: the second comes while the stream goes on (detached).
            writer.write(get("/stream") + (get("/plain") if together else b""))
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"200 OK" in head and b"transfer-encoding: chunked" in head
            if not together:
                writer.write(get("/plain"))
            body = await reader.readuntil(b"0\r\n\r\n")
            assert body.count(b"data: ") == 3
            assert b"200 OK" in await reader.readuntil(b"next")  # after the stream, in order
            writer.write(get("/plain"))  # and the connection is still kept alive
            assert b"200 OK" in await reader.readuntil(b"next")
        writer.close()
    assert source.closed.is_set()
    assert detached == [not together]


async def test_a_client_that_left_is_let_go() -> None:
    source = Frames(1000, pause=0.05)
    async with stream_server(source) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/stream"))
        await reader.readuntil(b"data: 1")
        writer.transport.abort()
        await asyncio.wait_for(source.closed.wait(), 5)


async def test_a_client_that_does_not_read_is_dropped() -> None:
    source = Frames(100_000, size=64 * 1024)  # far more than socket buffers hold
    async with stream_server(source, send_timeout=0.5) as port:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
        client.send(get("/stream"))
        # Never reading: once its buffers are full the stream's send times out.
        await asyncio.wait_for(source.closed.wait(), 30)
        client.close()


# -- on the gateway ------------------------------------------------------------------------


async def test_streams_and_long_polls_release_their_slots(rabbit, tmp_path) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        url = r.headers["location"]
        hub = gw.service.hub
        async with http.stream("GET", f"{url}/events?after=1", headers=SSE) as resp:
            async for line in resp.aiter_lines():
                if line.startswith(": stream"):
                    break
            assert hub.waiting == 1
        # The client closed the stream's connection: its waiter goes.
        await poll_until(lambda: hub.waiting == 0, 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        polled = await http.get(f"{url}?wait=1&after=1")  # no worker: the wait runs out
        assert 1 <= loop.time() - started < 5
        assert polled.status_code == 200 and polled.json()["status"] == "queued"
        assert hub.waiting == 0 and not any(hub._ticks.values())
