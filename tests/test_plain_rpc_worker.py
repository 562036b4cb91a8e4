"""A backend written as in RabbitMQ's RPC tutorial serves an operation with no gateway code."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support import ROOT


@asynccontextmanager
async def rpc_tutorial_server(op: str, broker_url: str) -> AsyncIterator[None]:
    """examples/workers/rpc_tutorial_server.py serving `op`, until the block ends."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples/workers/rpc_tutorial_server.py"),
        op,
        env={**os.environ, "GATEWAY_BROKER_URL": broker_url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert b"Awaiting RPC requests" in line
        yield
    finally:
        server.kill()
        await server.wait()


async def test_rpc_tutorial_server_serves_an_operation(gateway, rabbit) -> None:
    op = gateway.op("math.add")
    async with rpc_tutorial_server(op, rabbit.url), gateway.client() as http:
        r = await http.post(f"/v1/ops/{op}?wait=10", json={"a": 20, "b": 22})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"sum": 42}
