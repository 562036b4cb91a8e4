"""A worker of the test operation `conform.steps` with one planted bug, for
tests/test_conform.py: `gateway conform` must catch it and name the failing case.

    GATEWAY_BROKER_URL=amqp://... python tests/conform/faulty_worker.py --fault FAULT

Written straight on aio-pika (no gateway code), on the long-job pattern of docs/workers.md:
skip a request past its deadline; say `started` and ack; heartbeats every third of the
lease; progress after each step; the final result or error; stop on a cancel notice; reject
(without requeue) a body that is not JSON. The faults:
- `wrong-correlation`: every answer carries another correlation_id than its request's;
- `off-contract`: the result does not match the contract (`steps` is a string);
- `ignore-cancel`: cancel notices are ignored: the job heart-beats on and answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from jsonschema import Draft7Validator

OP = "conform.steps"
FAULTS = ("wrong-correlation", "off-contract", "ignore-cancel")
CONTRACT = orjson.loads((Path(__file__).parent / "conform.steps.json").read_bytes())
REQUEST = Draft7Validator({**CONTRACT, "$ref": "#/definitions/request"})


async def serve(fault: str) -> None:
    connection = await aio_pika.connect(os.environ["GATEWAY_BROKER_URL"])
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=8)
    running: dict[str, asyncio.Task[None]] = {}

    async def answer(request: AbstractIncomingMessage, kind: str, body: object) -> None:
        correlation_id = request.correlation_id or ""
        if fault == "wrong-correlation":
            correlation_id = f"not-{correlation_id}"
        await channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(body),
                content_type="application/json",
                correlation_id=correlation_id,
                type=kind,
            ),
            routing_key=request.reply_to or "",
        )

    async def heartbeats(request: AbstractIncomingMessage, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await answer(request, "heartbeat", None)

    async def work(request: AbstractIncomingMessage) -> None:
        headers = request.headers or {}
        deadline = headers.get("x-deadline")
        if isinstance(deadline, int) and deadline < time.time() * 1000:
            await request.ack()
            return
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            await request.reject(requeue=False)  # dead-lettered: the gateway fails the job
            return
        await answer(request, "started", None)
        await request.ack()
        lease = headers.get("x-lease-seconds")
        interval = (lease if isinstance(lease, int | float) and lease > 0 else 120) / 3
        beating = asyncio.create_task(heartbeats(request, interval))
        try:
            problem = next(iter(REQUEST.iter_errors(body)), None)
            if problem is not None:
                error = {"code": "invalid_request", "message": problem.message}
                await answer(request, "error", {"error": error})
                return
            total = body["steps"]
            for done in range(1, total + 1):
                await asyncio.sleep(body.get("seconds", 0))
                await answer(request, "progress", {"done": done, "total": total})
            if "fail" in body:
                error = {"code": body["fail"], "message": "failed, as the request asked"}
                await answer(request, "error", {"error": error})
            else:
                steps = "many" if fault == "off-contract" else total
                await answer(request, "result", {"steps": steps})
        finally:
            beating.cancel()

    async def on_request(request: AbstractIncomingMessage) -> None:
        job_id = request.correlation_id or ""
        task = asyncio.create_task(work(request))
        running[job_id] = task
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if running.get(job_id) is task:
            del running[job_id]

    async def on_cancel(notice: AbstractIncomingMessage) -> None:
        task = running.get(notice.correlation_id or "")
        if task is not None and fault != "ignore-cancel":
            task.cancel()

    notices = await connection.channel()
    cancels = await notices.declare_exchange("gateway.cancel", passive=True)
    mine = await notices.declare_queue(exclusive=True)
    await mine.bind(cancels)
    await mine.consume(on_cancel, no_ack=True)
    queue = await channel.declare_queue(OP, passive=True)
    await queue.consume(on_request)
    print(f"serving {OP} with the fault {fault}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=FAULTS, required=True)
    asyncio.run(serve(parser.parse_args().fault))
