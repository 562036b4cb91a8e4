"""The Perl worker kit (`Gateway::Worker`) on the lease pattern, as the Python worker's
tests prove it: a long-running job cancelled by HTTP DELETE mid-run (the handler hears
it), a job outliving its lease kept alive by heartbeats, and a request whose deadline has
passed skipped unrun; and a client's trace reaching it unchanged, continued on its answers.
A real gateway, a real RabbitMQ and a real Perl process
(tests/perl/worker.pl)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import orjson
import pytest

from gateway.trace_context import TraceContext
from tests.support import (
    ROOT,
    RabbitNode,
    RunningGateway,
    WorkerProcess,
    make_settings,
    serve_gateway,
)

WORKER = ROOT / "tests" / "perl" / "worker.pl"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACE_HEADERS = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "tracestate": "rojo=1"}
LEASE_SECONDS = 3  # heartbeats every second; a loaded machine may delay one a bit


def contract(**settings: object) -> dict[str, object]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "x-gateway": settings,
        "definitions": {"request": {"type": "object"}, "result": {"type": "object"}},
    }


Served = tuple[RunningGateway, WorkerProcess]


@pytest.fixture
async def perl(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[Served]:
    """A gateway with three contracts of our own, and the Perl worker serving them."""
    assert shutil.which("perl"), "perl is required"
    settings, ops = make_settings(
        tmp_path,
        rabbit.url,
        {
            "wait": contract(),
            "slow": contract(lease_seconds=LEASE_SECONDS),
            "echo": contract(),
        },
        sweep_interval_seconds=0.2,  # a lease that lapsed is noticed at once
    )
    async with serve_gateway(settings, ops) as gw:
        process = await asyncio.create_subprocess_exec(
            "perl",
            str(WORKER),
            ops["wait"],
            ops["slow"],
            ops["echo"],
            env={**os.environ, "GATEWAY_BROKER_URL": rabbit.url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = WorkerProcess(process)
        try:
            await worker.line("serving")
            yield gw, worker
        finally:
            await worker.stop()


async def test_cancel_reaches_a_running_perl_handler(perl: Served) -> None:
    gw, worker = perl
    async with gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('wait')}", json={})
        location, job_id = r.headers["location"], r.json()["id"]
        await worker.line(f"waiting {job_id}")
        running = (await http.get(f"{location}?wait=10&after=1")).json()
        assert running["status"] == "running"
        gone = await http.delete(location)
        assert gone.json()["status"] == "cancelled"
        # The notice reached the handler, while its job was still running.
        assert await worker.line(f"cancelled {job_id}") == f"cancelled {job_id} cancelled"
        events = (await http.get(f"{location}/events")).json()["events"]
    assert [e["type"] for e in events] == ["queued", "started", "cancelled"]


async def test_heartbeats_keep_a_perl_job_past_its_lease(perl: Served) -> None:
    gw, _ = perl
    seconds = 2 * LEASE_SECONDS + 1  # blocks in a child: only heartbeats keep its lease
    started = time.monotonic()
    async with gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('slow')}?wait=60", json={"seconds": seconds})
        job = r.json()
        events = (await http.get(f"{r.headers['location']}/events")).json()["events"]
    assert job["status"] == "succeeded", job  # not failed with worker_lost
    assert time.monotonic() - started >= seconds
    assert job["result"] == {"slept": seconds}
    assert [e["type"] for e in events] == ["queued", "started", "result"]


async def test_a_perl_worker_skips_a_request_past_its_deadline(
    perl: Served, rabbit: RabbitNode
) -> None:
    """Published straight to the queue (RabbitMQ would drop an expired request the gateway
    sent): the expired one is acked unrun and unanswered, the fresh one answered."""
    gw, worker = perl
    op = gw.op("echo")
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        now_ms = int(time.time() * 1000)
        for job_id, deadline in (("perl-expired", now_ms - 1000), ("perl-fresh", now_ms + 60_000)):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    orjson.dumps({"id": job_id}),
                    content_type="application/json",
                    correlation_id=job_id,
                    reply_to=replies.name,
                    type=op,
                    headers={"x-deadline": deadline, "x-attempt": 1, **TRACE_HEADERS},
                ),
                routing_key=op,
            )
        async with replies.iterator() as answers:
            async with asyncio.timeout(30):
                answer = await anext(answers)
            await answer.ack()
        await worker.line("ran perl-fresh")
        # Requests are handled in order, so a run of the expired one would be seen first.
        assert "ran perl-expired" not in worker.lines
        assert answer.correlation_id == "perl-fresh"
        assert orjson.loads(answer.body) == {"id": "perl-fresh"}
        # The answer continues the request's trace: same trace and flags, the worker's span.
        answered = TraceContext.parse(answer.headers["traceparent"], answer.headers["tracestate"])
        sent = TraceContext.parse(TRACE_HEADERS["traceparent"], TRACE_HEADERS["tracestate"])
        assert answered is not None and sent is not None
        assert (answered.trace_id, answered.flags, answered.state) == (
            sent.trace_id,
            sent.flags,
            sent.state,
        )
        assert answered.span_id != sent.span_id
        assert await replies.get(fail=False) is None  # nothing for the expired one
        # Both acked: nothing is left ready or unacked in the operation's queue.
        await wait_queue_empty(rabbit, op)


async def test_a_client_trace_reaches_the_perl_worker_unchanged(perl: Served) -> None:
    gw, worker = perl
    async with gw.client() as http:
        r = await http.post(
            f"/v1/ops/{gw.op('echo')}?wait=20", json={"x": 1}, headers=TRACE_HEADERS
        )
    job = r.json()
    assert job["status"] == "succeeded" and job["trace_id"] == TRACE_ID
    line = await worker.line(f"ran {job['id']}")
    assert line == f"ran {job['id']} traceparent={TRACE_HEADERS['traceparent']} trace_id={TRACE_ID}"


async def wait_queue_empty(rabbit: RabbitNode, queue: str, limit: float = 30) -> None:
    """Poll rabbitmqctl until `queue` holds no ready or unacked message."""
    async with asyncio.timeout(limit):
        while True:
            listing = await asyncio.to_thread(
                rabbit.ctl_output, "-q", "list_queues", "name", "messages"
            )
            counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
            if counts.get(queue) == "0":
                return
            await asyncio.sleep(0.2)  # the broker has no event for it: poll
