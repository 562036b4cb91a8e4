"""HTTP in, AMQP out, answer back: every kind of worker answer, on a real RabbitMQ."""

from __future__ import annotations

import asyncio

import aio_pika
import orjson
from jsonschema import Draft7Validator

from gateway.worker import JobFailed, Worker
from tests.support import ROOT, RunningGateway

JOB_SCHEMA = Draft7Validator(orjson.loads((ROOT / "schemas/wire/job.json").read_bytes()))
EVENT_SCHEMA = Draft7Validator(orjson.loads((ROOT / "schemas/wire/event.json").read_bytes()))


def adder(gateway: RunningGateway, rabbit_url: str) -> Worker:
    worker = Worker(rabbit_url)

    @worker.operation(gateway.op("math.add"))
    async def add(request, job):
        return {"sum": request["a"] + request["b"]}

    return worker


async def test_wait_returns_the_result(gateway, rabbit, run_worker) -> None:
    await run_worker(adder(gateway, rabbit.url))
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 2, "b": 3})
    assert r.status_code == 200, r.text
    job = r.json()
    JOB_SCHEMA.validate(job)
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 5}
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert len(job["id"]) >= 22  # 128 random bits, base64url


async def test_prefer_wait_header_is_honoured(gateway, rabbit, run_worker) -> None:
    await run_worker(adder(gateway, rabbit.url))
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('math.add')}",
            json={"a": 1, "b": 1},
            headers={"Prefer": "respond-async, wait=10"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"sum": 2}
    assert r.headers["preference-applied"] == "wait=10"


async def test_accepted_then_follow_location(gateway, rabbit, run_worker) -> None:
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": 40, "b": 2})
        assert r.status_code == 202, r.text
        queued = r.json()
        JOB_SCHEMA.validate(queued)
        assert queued["status"] == "queued" and queued["seq"] == 1
        location = r.headers["location"]
        # The worker comes up only now: the job waited in its durable queue.
        await run_worker(adder(gateway, rabbit.url))
        done = (await http.get(f"{location}?wait=30")).json()
    assert done["status"] == "succeeded"
    assert done["result"] == {"sum": 42}


async def test_progress_events_then_result(gateway, rabbit, run_worker) -> None:
    worker = Worker(rabbit.url)

    @worker.operation(gateway.op("report.generate"))
    async def generate(request, job):
        await job.started()
        for n in (1, 2):
            await job.progress({"done": n, "total": 2})
        await job.progress({"bad": "shape"})  # violates the progress schema: dropped
        return {"title": request["title"], "sections": ["a", "b"]}

    await run_worker(worker)
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}?wait=10", json={"title": "T"})
        job = r.json()
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"done": 2, "total": 2}
        page = (await http.get(f"/v1/jobs/{job['id']}/events")).json()
    for event in page["events"]:
        EVENT_SCHEMA.validate(event)
    assert [e["type"] for e in page["events"]] == [
        "queued",
        "started",
        "progress",
        "progress",
        "result",
    ]
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5]
    assert page["next"] == 5 == job["seq"]


async def test_error_answer_fails_the_job(gateway, rabbit, run_worker) -> None:
    worker = Worker(rabbit.url)

    @worker.operation(gateway.op("math.add"))
    async def add(request, job):
        if request["b"] == 0:
            raise JobFailed("division_by_zero", "b must not be zero")
        raise RuntimeError("boom")

    await run_worker(worker)
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 1, "b": 0})
        job = r.json()
        assert job["status"] == "failed"
        assert job["error"] == {"code": "division_by_zero", "message": "b must not be zero"}
        assert "result" not in job
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 1, "b": 1})
        assert r.json()["error"]["code"] == "worker_error"


async def raw_worker(rabbit_url: str, op: str, answer) -> aio_pika.abc.AbstractConnection:
    """A worker with no gateway code: `answer(message, channel)` does what it likes."""
    connection = await aio_pika.connect(rabbit_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(op, passive=True)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await answer(message, channel)

    await queue.consume(on_message)
    return connection


async def reply(channel, message, body: bytes, type: str | None = None, correlation_id=...):
    if correlation_id is ...:
        correlation_id = message.correlation_id
    await channel.default_exchange.publish(
        aio_pika.Message(body, correlation_id=correlation_id, type=type),
        routing_key=message.reply_to,
    )


async def test_invalid_result_fails_with_invalid_result(gateway, rabbit) -> None:
    async def answer(message, channel):
        await reply(channel, message, b'{"sum": "five"}')
        await message.ack()

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 2, "b": 3})
    finally:
        await conn.close()
    job = r.json()
    assert r.status_code == 200
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_result"
    assert job["error"]["details"][0]["path"] == "/sum"
    assert "result" not in job


async def test_non_json_answer_fails_with_invalid_answer(gateway, rabbit) -> None:
    async def answer(message, channel):
        await reply(channel, message, b"five, I think")
        await message.ack()

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 2, "b": 3})
    finally:
        await conn.close()
    assert r.json()["status"] == "failed"
    assert r.json()["error"]["code"] == "invalid_answer"


async def test_rejected_request_fails_with_rejected(gateway, rabbit) -> None:
    async def answer(message, channel):
        await message.reject(requeue=False)

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 2, "b": 3})
    finally:
        await conn.close()
    assert r.json()["status"] == "failed"
    assert r.json()["error"]["code"] == "rejected"


async def test_unknown_correlation_ids_and_late_answers_are_dropped(gateway, rabbit) -> None:
    async def answer(message, channel):
        await reply(channel, message, b'{"sum": 1}', correlation_id="no-such-job")
        await reply(channel, message, b"not json", correlation_id=None)
        await reply(channel, message, b'{"sum": 5}')
        await reply(channel, message, b'{"sum": 6}')  # a duplicate: the first one won
        await reply(channel, message, b'{"error": {"code": "x", "message": "y"}}', type="error")
        await message.ack()

    conn = await raw_worker(rabbit.url, gateway.op("math.add"), answer)
    try:
        async with gateway.client() as http:
            r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 2, "b": 3})
            job = r.json()
            assert job["result"] == {"sum": 5}
            # The later answers are consumed (acked) and change nothing:
            follow = await http.post(
                f"/v1/ops/{gateway.op('math.add')}?wait=10", json={"a": 0, "b": 0}
            )
            assert follow.json()["status"] == "succeeded"
            again = (await http.get(f"/v1/jobs/{job['id']}")).json()
    finally:
        await conn.close()
    assert again == job


async def test_idempotency_key_returns_the_same_job(gateway, rabbit, run_worker) -> None:
    op = gateway.op("math.add")
    async with gateway.client() as http:
        headers = {"Idempotency-Key": "order-17"}
        first = await http.post(f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers=headers)
        second = await http.post(f"/v1/ops/{op}", json={"b": 2, "a": 1}, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert first.headers["location"] == second.headers["location"]
        other = await http.post(f"/v1/ops/{op}", json={"a": 1, "b": 3}, headers=headers)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        fresh = await http.post(
            f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers={"Idempotency-Key": "order-18"}
        )
        assert fresh.json()["id"] != first.json()["id"]
        await run_worker(adder(gateway, rabbit.url))
        done = await http.post(f"/v1/ops/{op}?wait=10", json={"a": 1, "b": 2}, headers=headers)
        assert done.status_code == 200
        assert done.json()["id"] == first.json()["id"]
        assert done.json()["result"] == {"sum": 3}
        # Exactly one request message was published for the key: one queued, one result.
        events = (await http.get(f"/v1/jobs/{first.json()['id']}/events")).json()["events"]
        assert [e["type"] for e in events] == ["queued", "result"]


async def test_long_poll_after_wakes_on_the_next_event(gateway, rabbit, run_worker) -> None:
    release = asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(gateway.op("report.generate"))
    async def generate(request, job):
        await release.wait()
        await job.progress({"done": 1, "total": 2})
        await asyncio.Event().wait()  # then nothing more, ever

    await run_worker(worker)
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('report.generate')}", json={"title": "T"})
        location = r.headers["location"]
        poll = asyncio.create_task(http.get(f"{location}?wait=60&after=1"))
        events = asyncio.create_task(http.get(f"{location}/events?wait=60&after=1"))
        await asyncio.sleep(0)  # let both requests go out before the event exists
        release.set()
        # Far less than the 60 s wait: only a wake-up on the event can finish these.
        async with asyncio.timeout(10):
            job = (await poll).json()
            page = (await events).json()
    assert job["seq"] == 2 and job["status"] == "running"
    assert job["progress"] == {"done": 1, "total": 2}
    assert [e["type"] for e in page["events"]] == ["progress"]
    assert page["next"] == 2


async def test_wait_times_out_with_the_current_job(gateway) -> None:
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}?wait=0.2", json={"a": 1, "b": 2})
        assert r.status_code == 202
        assert r.json()["status"] == "queued"
        job = (await http.get(f"{r.headers['location']}?wait=0.2")).json()
        assert job["status"] == "queued"
        page = (await http.get(f"{r.headers['location']}/events?after=1&wait=0.2")).json()
        assert page == {"events": [], "next": 1}
