"""Beyond one machine, on one machine: a three-node RabbitMQ cluster, PostgreSQL, and two
gateway instances. Submit on A, stream on B; kill A mid-job; stop a broker node: the job
finishes and the stream on B misses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.cluster_support import RabbitCluster
from tests.fault_support import GatewayProcess
from tests.support import free_port, make_settings, serve_gateway
from tests.test_streaming import stepped_reporter


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


async def test_two_instances_a_dead_gateway_and_a_lost_broker_node(
    cluster, postgres_url, tmp_path, run_worker
):
    node1, node2, node3 = cluster.urls
    settings, ops = make_settings(tmp_path, " ".join([node1, node2, node3]), store_url=postgres_url)
    gateway_a = GatewayProcess(
        free_port(),
        f"{node2},{node1},{node3}",
        settings.contracts_dir,
        postgres_url,
        tmp_path / "gateway-a.log",
    )
    await gateway_a.start(limit=60)
    try:
        async with serve_gateway(settings, ops) as b, b.client() as http_b:
            assert b.service.peers is not None  # a shared store: instances tell each other
            steps = [asyncio.Event() for _ in range(3)]
            await run_worker(stepped_reporter(b, node3, steps))  # a worker on node 3
            async with httpx.AsyncClient(base_url=gateway_a.url) as http_a:
                r = await http_a.post(f"/v1/ops/{ops['report.generate']}", json={"title": "T"})
                assert r.status_code == 202
            location = r.headers["location"]
            seen: list[tuple[int, str]] = []
            async with aconnect_sse(
                http_b, "GET", f"{location}/events", headers={"Accept": "text/event-stream"}
            ) as source:
                stream = (sse async for sse in source.aiter_sse() if sse.id)
                async with asyncio.timeout(120):
                    sse = await anext(stream)
                    seen.append((int(sse.id), sse.event))
                    steps[0].set()
                    sse = await anext(stream)
                    seen.append((int(sse.id), sse.event))
                    # Gateway A dies, with no goodbye.
                    await gateway_a.kill()
                    steps[1].set()
                    sse = await anext(stream)
                    seen.append((int(sse.id), sse.event))
                    # The broker node B is connected to goes away; B fails over.
                    await asyncio.to_thread(cluster.nodes[0].stop)
                    steps[2].set()
                    async for sse in stream:
                        seen.append((int(sse.id), sse.event))
            job = (await http_b.get(f"{location}?wait=30")).json()
            failed_over = b.service.broker.ready  # connected again, through another node
    finally:
        await gateway_a.stop()
    assert [seq for seq, _ in seen] == list(range(1, len(seen) + 1))  # no gap, no repeat
    assert [t for _, t in seen] == ["queued", "progress", "progress", "progress", "result"]
    assert job["status"] == "succeeded"
    assert failed_over
