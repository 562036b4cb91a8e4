"""A backend written as in RabbitMQ's RPC tutorial serves an operation with no gateway code."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.support import ROOT


async def test_rpc_tutorial_server_serves_an_operation(gateway, rabbit) -> None:
    op = gateway.op("math.add")
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples/workers/rpc_tutorial_server.py"),
        op,
        env={**os.environ, "GATEWAY_BROKER_URL": rabbit.url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert b"Awaiting RPC requests" in line
        async with gateway.client() as http:
            r = await http.post(f"/v1/ops/{op}?wait=10", json={"a": 20, "b": 22})
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"sum": 42}
    finally:
        server.kill()
        await server.wait()
