"""Several gateway instances on one store: any instance answers for any job, and its
waiters wake on events that another instance recorded, through RabbitMQ, not by polling.
(Here both share one SQLite file; the PostgreSQL and cluster version is in
test_cluster.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from httpx_sse import aconnect_sse

from tests.support import make_settings, serve_gateway
from tests.test_streaming import stepped_reporter


async def test_submit_on_one_instance_follow_on_another(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url, notify_peers=True)
    async with serve_gateway(settings, ops) as a, serve_gateway(settings, ops) as b:
        assert a.service.peers is not None and b.service.peers is not None
        steps = [asyncio.Event() for _ in range(3)]
        await run_worker(stepped_reporter(a, rabbit.url, steps))
        async with a.client() as http_a, b.client() as http_b:
            r = await http_a.post(f"/v1/ops/{a.op('report.generate')}", json={"title": "T"})
            location = r.headers["location"]
            # A long-poll on B, waiting for the first event past `queued`...
            poll = asyncio.create_task(http_b.get(f"{location}?wait=60&after=1"))
            seen: list[int] = []
            async with aconnect_sse(
                http_b, "GET", f"{location}/events", headers={"Accept": "text/event-stream"}
            ) as source:
                stream = (sse async for sse in source.aiter_sse() if sse.id)  # events only
                first = await anext(stream)
                assert first.event == "queued"
                seen.append(int(first.id))
                for step in steps:
                    step.set()
                # ... wakes well before its 60 s: whichever instance stored the event
                # told the other at once.
                async with asyncio.timeout(15):
                    job = (await poll).json()
                    async for sse in stream:
                        seen.append(int(sse.id))
        assert job["seq"] >= 2
        assert seen == list(range(1, 6))  # queued, 3 progress, result: all, in order, once


async def test_single_store_instances_do_not_announce(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(replace(settings), ops) as gw:
        assert gw.service.peers is None  # SQLite is one instance's: nobody to tell
