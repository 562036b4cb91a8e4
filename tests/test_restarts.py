"""Nothing accepted is forgotten: gateway restarts on the same store, broker outages."""

from __future__ import annotations

import asyncio

import orjson

from gateway.worker import Worker
from tests.fault_support import poll_until
from tests.support import EXAMPLE_CONTRACTS, TcpProxy, free_port, make_settings, serve_gateway
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


async def test_every_consumer_is_back_after_restarts_and_cuts(rabbit, tmp_path, run_worker):
    """A gateway that came back without its answer consumer would strand every job. After
    each of several broker restarts and cuts of its link, rabbitmqctl must list each of
    the gateway's consumers again, and answers must flow."""
    async with TcpProxy(rabbit.port) as proxy:
        light = {**LIGHT_ADD, "x-gateway": {"durability": "light"}}
        settings, ops = make_settings(
            tmp_path, f"amqp://guest:guest@127.0.0.1:{proxy.port}/", contracts={"light.add": light}
        )
        async with serve_gateway(settings, ops) as gw, gw.client() as http:
            worker = adder(gw, rabbit.url)  # the worker's own link is not cut
            worker.operation(ops["light.add"])(add)
            await run_worker(worker)
            broker = gw.service.broker
            faults = ["cut", "restart", "cut", "cut", "restart", "cut"]
            for fault in faults:
                connected_at = broker.consumer.up_since
                if fault == "cut":
                    proxy.cut()
                else:
                    await asyncio.to_thread(rabbit.stop)
                    await asyncio.to_thread(rabbit.start)
                # Connected anew (it may have been, already, by the time start returns).
                await poll_until(
                    lambda c=connected_at: broker.ready and broker.consumer.up_since > c,
                    limit=60,
                )
                listed = await asyncio.to_thread(
                    rabbit.ctl_output, "-q", "list_consumers", "queue_name", "consumer_tag"
                )
                mine = {
                    tuple(line.split("\t")[:2])
                    for line in listed.splitlines()
                    if f"gateway.{broker.instance}." in line
                }
                kinds = {(queue.split(".")[1], tag.split(".")[2]) for queue, tag in mine}
                assert kinds == {
                    ("answers", "answers"),
                    ("dead-letters", "dead-letters"),
                    ("replies", "replies"),
                }, (fault, listed)
                for op in (ops["math.add"], ops["light.add"]):
                    r = await http.post(f"/v1/ops/{op}?wait=30", json={"a": 1, "b": 2})
                    assert r.status_code == 200 and r.json()["result"] == {"sum": 3}, r.text
    print(f"\n[consumers after faults] {len(faults)} faults, all consumers back after each")


LIGHT_ADD = orjson.loads((EXAMPLE_CONTRACTS / "math.add.json").read_bytes())


async def add(request, job):
    return {"sum": request["a"] + request["b"]}
