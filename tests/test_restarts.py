"""Nothing accepted is forgotten: gateway restarts on the same store, broker outages."""

from __future__ import annotations

import asyncio

from gateway.worker import Worker
from tests.support import free_port, make_settings, serve_gateway
from tests.test_round_trip import adder


async def test_restarted_gateway_answers_for_jobs_accepted_before(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as first, first.client() as http:
        r = await http.post(f"/v1/ops/{first.op('math.add')}", json={"a": 1, "b": 2})
        assert r.status_code == 202
        location = r.headers["location"]
    # No gateway runs while the worker answers: the answer waits in RabbitMQ.
    answered = asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(ops["math.add"])
    async def add(request, job):
        answered.set()
        return {"sum": request["a"] + request["b"]}

    await run_worker(worker)
    await asyncio.wait_for(answered.wait(), 30)
    async with serve_gateway(settings, ops) as second, second.client() as http:
        job = (await http.get(f"{location}?wait=30")).json()
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 3}


async def test_unreachable_broker_answers_503_at_once(rabbit, tmp_path):
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    settings, ops = make_settings(tmp_path, dead, publish_timeout_seconds=30)
    async with serve_gateway(settings, ops, wait_for_broker=False) as gw, gw.client() as http:
        async with asyncio.timeout(5):  # far below the publish timeout: nothing waits
            r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "broker_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"broker": False, "store": True}


async def test_broker_outage_503_then_recovery(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url, publish_timeout_seconds=30)
    async with serve_gateway(settings, ops) as gw:
        await run_worker(adder(gw, rabbit.url))
        async with gw.client() as http:
            ok = await http.post(f"/v1/ops/{gw.op('math.add')}?wait=10", json={"a": 1, "b": 1})
            assert ok.status_code == 200
            await asyncio.to_thread(rabbit.stop)
            try:
                async with asyncio.timeout(5):
                    r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"].startswith("broker_")
                assert "retry-after" in r.headers
                assert (await http.get("/readyz")).status_code == 503
            finally:
                await asyncio.to_thread(rabbit.start)
            assert await gw.service.broker.wait_ready(60)
            assert (await http.get("/readyz")).status_code == 200
            r = await http.post(f"/v1/ops/{gw.op('math.add')}?wait=30", json={"a": 2, "b": 2})
            assert r.status_code == 200, r.text
            assert r.json()["result"] == {"sum": 4}
