"""The whole job lifecycle: cancel, deadlines, worker leases, backpressure, retention,
durability modes."""

from __future__ import annotations

import asyncio
import time

import aio_pika

from gateway.worker import Worker
from tests.support import make_settings, serve_gateway
from tests.test_round_trip import adder, raw_worker, reply


def contract(**settings: object) -> dict[str, object]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "x-gateway": settings,
        "definitions": {"request": {"type": "object"}, "result": {"type": "object"}},
    }


async def test_cancel_ends_the_job_and_reaches_the_worker(gateway, rabbit, run_worker):
    started, cancelled = asyncio.Event(), asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(gateway.op("report.generate"))
    async def generate(request, job):
        await job.started()
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await run_worker(worker)
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}", json={"title": "T"})
        location = r.headers["location"]
        await asyncio.wait_for(started.wait(), 10)
        running = (await http.get(f"{location}?wait=10&after=1")).json()
        assert running["status"] == "running"
        gone = await http.delete(location)
        assert gone.status_code == 200
        assert gone.json()["status"] == "cancelled"
        assert gone.json()["error"]["code"] == "cancelled"
        await asyncio.wait_for(cancelled.wait(), 10)  # the notice reached the handler
        again = await http.delete(location)  # cancelling twice is harmless
        assert again.status_code == 200
        events = (await http.get(f"{location}/events")).json()["events"]
        assert [e["type"] for e in events] == ["queued", "started", "cancelled"]


async def test_late_answer_does_not_change_a_cancelled_job(gateway, rabbit):
    held: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def answer(message, channel):
        if not held:
            held.append(message)  # the first job: hold it, answer only later
            return
        # The second job: first the late answer to the first, then its own.
        await reply(channel, held[0], b'{"sum": 1}')
        await reply(channel, message, b'{"sum": 2}')
        await held[0].ack()
        await message.ack()

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            first = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": 1, "b": 0})
            location = first.headers["location"]
            assert (await http.delete(location)).json()["status"] == "cancelled"
            second = await http.post(
                f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 1, "b": 1}
            )
            assert second.json()["result"] == {"sum": 2}
            job = (await http.get(location)).json()
            finished = await http.delete(second.headers["location"])
    finally:
        await conn.close()
    assert job["status"] == "cancelled" and "result" not in job
    assert finished.status_code == 409
    assert finished.json()["error"]["code"] == "job_finished"


async def test_request_expiring_in_the_queue_ends_expired(rabbit, tmp_path):
    # The sweeper is off: only RabbitMQ's dead-lettering of the expired message can do it.
    settings, ops = make_settings(tmp_path, rabbit.url, sweep_interval_seconds=3600)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(
            f"/v1/ops/{gw.op('math.add')}",
            json={"a": 1, "b": 2},
            headers={"X-Deadline-Seconds": "0.5"},
        )
        assert r.status_code == 202
        assert "deadline" in r.json()
        job = (await http.get(f"{r.headers['location']}?wait=30")).json()
    assert job["status"] == "expired"
    assert job["error"]["code"] == "expired"
    assert "queue" in job["error"]["message"]


async def test_worker_past_the_deadline_makes_the_job_expired(gateway, rabbit):
    taken = asyncio.Event()

    async def answer(message, channel):
        taken.set()  # ... and never answers

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            r = await http.post(
                f"/v1/ops/{gateway.op('math.add')}",
                json={"a": 1, "b": 2},
                headers={"X-Deadline-Seconds": "600"},
            )
            await asyncio.wait_for(taken.wait(), 10)
            await gateway.service.sweep(now=time.time() + 300)
            assert (await http.get(r.headers["location"])).json()["status"] == "queued"
            await gateway.service.sweep(now=time.time() + 601)
            job = (await http.get(r.headers["location"])).json()
    finally:
        await conn.close()
    assert job["status"] == "expired"
    assert job["error"]["message"] == "the job did not finish by its deadline"


async def test_silent_long_running_worker_is_lost_after_its_lease(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url, {"slow": contract(lease_seconds=30)})
    progressed = asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(ops["slow"], long_running=True)
    async def slow(request, job):
        await job.progress({"step": 1})
        progressed.set()
        await asyncio.Event().wait()

    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        serving = asyncio.create_task(worker.serve())
        r = await http.post(f"/v1/ops/{ops['slow']}", json={})
        await asyncio.wait_for(progressed.wait(), 10)
        running = (await http.get(f"{r.headers['location']}?wait=10&after=2")).json()
        assert running["status"] == "running"
        serving.cancel()  # the worker dies; it had acked, so nothing is redelivered
        await asyncio.gather(serving, return_exceptions=True)
        await gw.service.sweep(now=time.time() + 10)
        assert (await http.get(r.headers["location"])).json()["status"] == "running"
        await gw.service.sweep(now=time.time() + 31)
        job = (await http.get(r.headers["location"])).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "worker_lost"


async def test_full_queue_answers_503_with_retry_after(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url, {"tiny": contract(max_queue_length=2)})
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        for _ in range(2):
            assert (await http.post(f"/v1/ops/{ops['tiny']}", json={})).status_code == 202
        # A quorum queue notices it is over its limit one message late.
        full = await http.post(f"/v1/ops/{ops['tiny']}", json={})
        if full.status_code == 202:
            full = await http.post(f"/v1/ops/{ops['tiny']}", json={})
    assert full.status_code == 503
    assert full.json()["error"]["code"] == "broker_refused"
    assert int(full.headers["retry-after"]) > 0


async def test_waiters_beyond_the_cap_get_503(rabbit, tmp_path):
    # No per-client share: this is the process's cap (tests/test_fair_share.py: the share).
    settings, ops = make_settings(tmp_path, rabbit.url, max_waiters=1, max_waiters_per_client=0)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        location = r.headers["location"]
        async with http.stream(
            "GET", f"{location}/events", headers={"Accept": "text/event-stream"}
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            while await anext(lines) != "event: queued":  # the stream now holds its watch
                pass
            refused = await http.get(f"{location}?wait=5")
            refused_stream = await http.get(
                f"{location}/events", headers={"Accept": "text/event-stream"}
            )
        assert (await http.get(location)).status_code == 200  # no wait: no waiter
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "too_many_waiters"
    assert "retry-after" in refused.headers
    assert refused_stream.status_code == 503


async def test_retention_purges_finished_jobs(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(adder(gw, rabbit.url))
        done = await http.post(f"/v1/ops/{gw.op('math.add')}?wait=10", json={"a": 1, "b": 2})
        waiting = await http.post(f"/v1/ops/{gw.op('report.generate')}", json={"title": "T"})
        week = 7 * 24 * 3600
        await gw.service.sweep(now=time.time() + week - 60)
        assert (await http.get(done.headers["location"])).status_code == 200
        await gw.service.sweep(now=time.time() + week + 60)
        gone = await http.get(done.headers["location"])
        kept = await http.get(waiting.headers["location"])  # unfinished: never purged
    assert gone.status_code == 404
    assert kept.status_code == 200


async def test_light_durability_is_declared_and_shown(rabbit, tmp_path, run_worker):
    settings, ops = make_settings(tmp_path, rabbit.url, {"quick": contract(durability="light")})
    worker = Worker(rabbit.url)

    @worker.operation(ops["quick"])
    async def quick(request, job):
        return {"echo": request}

    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(worker)
        r = await http.post(f"/v1/ops/{ops['quick']}?wait=10", json={"x": 1})
        assert r.json()["result"] == {"echo": {"x": 1}}
        events = (await http.get(f"{r.headers['location']}/events")).json()["events"]
        assert [e["type"] for e in events] == ["queued", "result"]
        durable_job = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        shown = (await http.get(f"/v1/ops/{ops['quick']}")).json()["x-gateway"]
        durable = (await http.get(f"/v1/ops/{gw.op('math.add')}")).json()["x-gateway"]
    # What light gives up, exactly: its jobs live in the memory of the instance that
    # took them, so a restarted gateway no longer knows them (durable ones it does).
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        assert (await http.get(r.headers["location"])).status_code == 404
        assert (await http.get(durable_job.headers["location"])).status_code == 200
    assert shown["durability"] == "light"
    assert durable["durability"] == "durable"
    assert durable["retention_seconds"] == 7 * 24 * 3600
    connection = await aio_pika.connect(rabbit.url)
    try:
        channel = await connection.channel()
        # Redeclaring as a quorum queue is refused: the light queue is a classic one.
        try:
            await channel.declare_queue(
                ops["quick"], durable=True, arguments={"x-queue-type": "quorum"}
            )
            raise AssertionError("expected PRECONDITION_FAILED")
        except aio_pika.exceptions.ChannelPreconditionFailed:
            pass
    finally:
        await connection.close()
