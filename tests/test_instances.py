"""Several gateway instances on one store: any instance answers for any job, and its
waiters wake on events that another instance recorded, through RabbitMQ, not by polling.
(Here both share one SQLite file; the PostgreSQL and cluster version is in
test_cluster.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aio_pika
from httpx_sse import aconnect_sse

from gateway.wire import ANSWERS_QUEUE
from gateway.worker import Worker
from tests.fault_support import poll_until, readyz_until
from tests.support import make_settings, serve_gateway
from tests.test_round_trip import adder
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


async def test_one_jobs_answers_are_stored_in_order_across_instances(rabbit, tmp_path, run_worker):
    """The interleaving behind a stream that ended at a result numbered one short: the
    worker's progress reaches instance A, whose store write is slow; its result reaches
    instance B, which stores it first; the progress, coming after a terminal event, is
    dropped. Answers must be stored in the order the worker sent them."""
    settings, ops = make_settings(tmp_path, rabbit.url, notify_peers=True)
    op = ops["report.generate"]
    progress_sent, send_result = asyncio.Event(), asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(op)
    async def generate(request, job):
        await job.progress({"done": 1, "total": 1})
        progress_sent.set()
        await send_result.wait()
        return {"title": request["title"], "sections": ["1"]}

    async with serve_gateway(settings, ops) as a, serve_gateway(settings, ops) as b:
        holding, release = asyncio.Event(), asyncio.Event()
        for gateway in (a, b):  # whichever instance gets the progress holds it
            store = gateway.service.store
            record = store.record

            async def slow_progress(job_id, type, data, *, _record=record, **kwargs):
                if type == "progress":
                    holding.set()
                    await release.wait()
                return await _record(job_id, type, data, **kwargs)

            store.record = slow_progress  # type: ignore[method-assign]
        await run_worker(worker)
        async with a.client() as http:
            r = await http.post(f"/v1/ops/{op}", json={"title": "T"})
            location = r.headers["location"]
            await asyncio.wait_for(holding.wait(), 10)
            send_result.set()
            # While the progress is held, the result must not overtake it.
            early = (await http.get(f"{location}?wait=3")).json()
            release.set()
            job = (await http.get(f"{location}?wait=30")).json()
            events = (await http.get(f"{location}/events")).json()["events"]
    assert early["status"] != "succeeded", early
    assert job["status"] == "succeeded", job
    assert [e["type"] for e in events] == ["queued", "progress", "result"]


async def test_a_gateway_with_another_store_is_refused_on_a_shared_vhost(
    rabbit, tmp_path, run_worker
):
    """A second gateway with a store of its own on the same virtual host would take the
    first one's answers and drop them as unknown. It must be stopped, not absorbed."""
    first_settings, ops = make_settings(tmp_path / "first", rabbit.url)
    second_settings = replace(first_settings, store_url=f"sqlite:///{tmp_path / 'other.sqlite3'}")
    async with serve_gateway(first_settings, ops) as first:
        await run_worker(adder(first, rabbit.url))
        async with (
            serve_gateway(second_settings, ops, wait_for_broker=False, take_over=False) as second,
            first.client() as http,
            second.client() as other,
        ):
            refused = await readyz_until(other, 503, problem="another job store")
            r = await other.post(f"/v1/ops/{ops['math.add']}", json={"a": 1, "b": 2})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            # The first gateway's jobs all finish: no answer went to the second.
            jobs = [
                (await http.post(f"/v1/ops/{ops['math.add']}", json={"a": n, "b": 1})).json()
                for n in range(40)
            ]
            ends = [(await http.get(f"/v1/jobs/{j['id']}?wait=30")).json() for j in jobs]
            assert not second.service.broker.ready
    print(f"\n[foreign store] refused after {refused:.2f}s; first gateway's jobs {len(ends)}")
    assert [e["status"] for e in ends] == ["succeeded"] * 40


async def test_an_answer_for_a_job_already_ended_wakes_its_waiters(gateway, rabbit):
    """The interleaving of a flake seen with --workers: one process stored a job's result
    and died before its notice to the others went out (and before its ack), so RabbitMQ
    delivered the answer again, to the process whose long-poll waited for that job. The
    answer changes nothing (the job has ended), but it must wake that long-poll: else it
    sleeps to its timeout (or, in a shutdown, is cut off with a 500)."""
    op = gateway.op("math.add")
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{op}", json={"a": 1, "b": 2})
        job_id = r.json()["id"]
        waiting = asyncio.create_task(http.get(f"/v1/jobs/{job_id}?wait=30"))
        await poll_until(lambda: gateway.service.hub.waiting == 1)
        # "Another process" stored the result; its notice never came.
        await gateway.service.store.record(job_id, "result", {"sum": 3})
        connection = await aio_pika.connect(rabbit.url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"sum": 3}', correlation_id=job_id, type="result"),
                routing_key=ANSWERS_QUEUE,
            )
            async with asyncio.timeout(10):  # far below the wait
                job = (await waiting).json()
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 3}
