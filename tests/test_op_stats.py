"""`GET /v1/ops/{op}/stats`: the figures worked out from job timings (pure), and the
endpoint on a real RabbitMQ with real workers — queue depth and consumers, jobs' counts and
timings as they run, a paused broker, unknown operations, scopes; and its OpenAPI entry."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway import op_stats
from gateway.config import AuthSettings
from gateway.contracts import ContractRegistry
from gateway.op_figures import op_figures, percentiles
from gateway.op_stats import QueueStats
from gateway.openapi import OP_STATS, build_openapi
from gateway.store.base import JobTiming
from gateway.worker import JobFailed, Worker
from tests.support import EXAMPLE_CONTRACTS, make_settings, serve_gateway
from tests.test_auth import KEYS, bearer, key_file

STATS_SCHEMA = Draft202012Validator(OP_STATS)
NOW = 1_000_000.0


def timing(status, created, answered=None, updated=None) -> JobTiming:
    """A job's timing, its times in seconds before NOW."""
    return JobTiming(
        status,
        NOW - created,
        None if answered is None else NOW - answered,
        NOW - (updated if updated is not None else answered if answered is not None else created),
    )


# -- the figures, from timings ---------------------------------------------------------------


def test_percentiles_are_values_seen_and_none_of_nothing():
    assert percentiles([]) is None
    assert percentiles([0.25]) == {"p50": 0.25, "p90": 0.25, "max": 0.25}
    assert percentiles([10, 1, 9, 2, 8, 3, 7, 4, 6, 5]) == {"p50": 5, "p90": 9, "max": 10}
    assert percentiles([0.0004, 1.23456]) == {"p50": 0.0, "p90": 1.235, "max": 1.235}


def test_no_jobs_no_figures():
    figures = op_figures([], now=NOW, window_seconds=300, limit=1000)
    assert figures == {
        "window_seconds": 300,
        "accepted": 0,
        "finished": 0,
        "outcomes": {"succeeded": 0, "failed": 0, "cancelled": 0, "expired": 0},
        "accepted_per_minute": 0.0,
        "finished_per_minute": 0.0,
        "queue_wait_seconds": None,
        "run_seconds": None,
        "sampled": 0,
        "complete": True,
    }


def test_figures_of_a_window():
    timings = [
        timing("succeeded", created=10, answered=9, updated=7),  # waited 1 s, ran 2 s
        timing("failed", created=20, answered=17, updated=13),  # waited 3 s, ran 4 s
        timing("running", created=30, answered=25),  # waited 5 s, runs on
        timing("queued", created=5),  # waits on: no figure yet
        timing("cancelled", created=40, updated=35),  # cancelled in its queue
        timing("expired", created=50, answered=45, updated=44),  # ran, but ended from outside
        # Made before the window, ended in it: finished, not accepted; its wait is old news.
        timing("succeeded", created=900, answered=800, updated=60),
    ]
    figures = op_figures(timings, now=NOW, window_seconds=300, limit=1000)
    assert figures["accepted"] == 6
    assert figures["finished"] == 5
    assert figures["outcomes"] == {"succeeded": 2, "failed": 1, "cancelled": 1, "expired": 1}
    assert figures["accepted_per_minute"] == 1.2
    assert figures["finished_per_minute"] == 1.0
    # Waits 1, 3, 5, 5 (running, expired); the one answered before the window is left out.
    assert figures["queue_wait_seconds"] == {"p50": 3, "p90": 5, "max": 5}
    # Runs of succeeded and failed jobs only: 2, 4 and the old one's 740.
    assert figures["run_seconds"] == {"p50": 4, "p90": 740, "max": 740}
    assert figures["sampled"] == 7 and figures["complete"] is True
    assert figures["window_seconds"] == 300


def test_clocks_that_disagree_give_no_negative_durations():
    # Another instance's clock a little behind: answered "before" it was made.
    figures = op_figures(
        [timing("succeeded", created=10, answered=10.5, updated=11)],
        now=NOW,
        window_seconds=300,
        limit=1000,
    )
    assert figures["queue_wait_seconds"] == {"p50": 0, "p90": 0, "max": 0}
    assert figures["run_seconds"] == {"p50": 0, "p90": 0, "max": 0}


def test_a_full_sample_covers_the_span_of_the_latest_jobs():
    # Newest first, as the store answers; the limit is reached: the figures cover the last
    # 120 s (back to the oldest sampled update), and rates are over those 120 s.
    timings = [
        timing("succeeded", created=20, answered=15, updated=10),
        timing("running", created=60, answered=50),
        timing("failed", created=200, answered=150, updated=120),
    ]
    figures = op_figures(timings, now=NOW, window_seconds=300, limit=3)
    assert figures["complete"] is False and figures["sampled"] == 3
    assert figures["window_seconds"] == 120
    assert figures["accepted"] == 2  # the third was made before the span
    assert figures["finished"] == 2
    assert figures["accepted_per_minute"] == 1.0
    assert figures["finished_per_minute"] == 1.0
    assert figures["queue_wait_seconds"] == {"p50": 5, "p90": 10, "max": 10}
    assert figures["run_seconds"] == {"p50": 5, "p90": 30, "max": 30}


def test_the_openapi_document_describes_both_endpoints():
    spec = build_openapi(ContractRegistry.from_directory(EXAMPLE_CONTRACTS))
    validate(spec)
    assert spec["paths"]["/v1/ops/math.add/stats"]["get"]["responses"]["200"]
    assert spec["paths"]["/v1/me"]["get"]["responses"]["401"]
    assert "OpStats" in spec["components"]["schemas"] and "Me" in spec["components"]["schemas"]


# -- the endpoint, on a real RabbitMQ ---------------------------------------------------------


@pytest.fixture
def always_fresh(monkeypatch):
    """Work every answer out afresh (no second of caching): each request sees the latest."""
    monkeypatch.setattr(op_stats, "FRESH_SECONDS", 0.0)


async def stats_of(http, op: str, **kwargs) -> dict:
    r = await http.get(f"/v1/ops/{op}/stats", **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    STATS_SCHEMA.validate(body)
    assert body["op"] == op
    return body


async def start_worker(worker: Worker) -> asyncio.Task[None]:
    """Serve `worker` until its task is cancelled; returns once it consumes."""
    ready = asyncio.Event()
    task = asyncio.create_task(worker.serve(ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return task


async def stop_worker(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_queue_depth_consumers_and_job_figures(rabbit, tmp_path, always_fresh):
    settings, ops = make_settings(tmp_path, rabbit.url)
    add = ops["math.add"]
    release = asyncio.Event()
    started = asyncio.Event()

    def adder() -> Worker:
        worker = Worker(rabbit.url)

        @worker.operation(add)
        async def handle(request, job):
            if request["a"] < 0:
                raise JobFailed("negative", "only non-negative numbers")
            if request["b"] == 99:  # the slow one: runs until the test releases it
                await job.started()
                started.set()
                await release.wait()
            return {"sum": request["a"] + request["b"]}

        return worker

    workers: list[asyncio.Task[None]] = []
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        try:
            before = await stats_of(http, add)
            assert before["queue"] == {"name": add, "messages": 0, "consumers": 0}
            assert before["accepted"] == 0 and before["sampled"] == 0
            assert before["queue_wait_seconds"] is None and before["run_seconds"] is None

            # No worker: the jobs wait in the queue, and count as accepted.
            jobs = []
            for body in ({"a": 1, "b": 2}, {"a": -1, "b": 2}, {"a": 3, "b": 4}):
                r = await http.post(f"/v1/ops/{add}", json=body)
                assert r.status_code == 202, r.text
                jobs.append(r.json()["id"])
            queued = await stats_of(http, add)
            assert queued["queue"] == {"name": add, "messages": 3, "consumers": 0}
            assert queued["accepted"] == 3 and queued["finished"] == 0
            assert queued["accepted_per_minute"] == 0.6
            assert queued["queue_wait_seconds"] is None  # nobody has answered yet

            # A worker comes online: it takes them all; two end well, one fails.
            workers.append(await start_worker(adder()))
            for job_id in jobs:
                r = await http.get(f"/v1/jobs/{job_id}?wait=30")
                assert r.json()["status"] in ("succeeded", "failed"), r.text
            ran = await stats_of(http, add)
            assert ran["queue"] == {"name": add, "messages": 0, "consumers": 1}
            assert ran["accepted"] == 3 and ran["finished"] == 3
            assert ran["outcomes"] == {"succeeded": 2, "failed": 1, "cancelled": 0, "expired": 0}
            assert ran["finished_per_minute"] == 0.6
            assert ran["queue_wait_seconds"]["max"] > 0  # they waited for the worker
            assert ran["run_seconds"] is not None
            assert ran["sampled"] == 3 and ran["complete"] is True

            # A second worker: two consumers. A job that has started but not ended has
            # waited (its first answer came) but has no run yet.
            workers.append(await start_worker(adder()))
            r = await http.post(f"/v1/ops/{add}", json={"a": 0, "b": 99})
            slow = r.json()["id"]
            await started.wait()
            r = await http.get(f"/v1/jobs/{slow}?wait=30&after=1")  # its `started` is stored
            assert r.json()["status"] == "running", r.text
            since_started = time.monotonic()
            running = await stats_of(http, add)
            assert running["queue"]["consumers"] == 2
            assert running["accepted"] == 4 and running["finished"] == 3
            assert running["sampled"] == 4
            held = time.monotonic() - since_started
            release.set()
            r = await http.get(f"/v1/jobs/{slow}?wait=30")
            assert r.json()["status"] == "succeeded", r.text
            done = await stats_of(http, add)
            assert done["finished"] == 4 and done["outcomes"]["succeeded"] == 3
            # It ran from its `started` until released, at least while the test held it.
            assert done["run_seconds"]["max"] >= round(held, 3) - 0.001 > 0

            # A worker goes offline: one consumer left.
            await stop_worker(workers.pop())
            assert (await stats_of(http, add))["queue"]["consumers"] == 1
        finally:
            for task in workers:
                await stop_worker(task)


async def test_a_light_operation_has_figures_too(rabbit, tmp_path, always_fresh):
    light = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "x-gateway": {"durability": "light"},
        "definitions": {"request": {"type": "object"}, "result": {"type": "object"}},
    }
    settings, ops = make_settings(tmp_path, rabbit.url, {"quick": light})
    quick = ops["quick"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(f"/v1/ops/{quick}", json={})
        assert r.status_code == 202, r.text
        stats = await stats_of(http, quick)
    assert stats["queue"] == {"name": quick, "messages": 1, "consumers": 0}
    assert stats["accepted"] == 1 and stats["sampled"] == 1


async def test_many_consoles_cost_one_look_a_second(rabbit, tmp_path, monkeypatch):
    """Concurrent requests share one passive declare and one store read, and answers are
    kept for a second: a job submitted meanwhile shows once it has passed."""
    declares = 0
    declare = QueueStats._declare

    async def counted(connection, queue):
        nonlocal declares
        declares += 1
        return await declare(connection, queue)

    monkeypatch.setattr(QueueStats, "_declare", staticmethod(counted))
    monkeypatch.setattr(op_stats, "FRESH_SECONDS", 3600.0)  # kept until the test says
    settings, ops = make_settings(tmp_path, rabbit.url)
    add = ops["math.add"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        reads = 0
        store = gw.service.store
        recent_timings = store.recent_timings

        async def counted_reads(*args, **kwargs):
            nonlocal reads
            reads += 1
            return await recent_timings(*args, **kwargs)

        monkeypatch.setattr(store, "recent_timings", counted_reads)
        answers = await asyncio.gather(*(stats_of(http, add) for _ in range(20)))
        assert (declares, reads) == (1, 1)
        assert all(a == answers[0] for a in answers)
        r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2})
        assert r.status_code == 202
        assert await stats_of(http, add) == answers[0]  # kept: not worked out again
        monkeypatch.setattr(op_stats, "FRESH_SECONDS", 0.0)  # ... until it is stale
        fresh = await stats_of(http, add)
        assert (declares, reads) == (2, 2)
        assert fresh["accepted"] == 1 and fresh["queue"]["messages"] == 1


async def test_a_paused_broker_gives_no_queue_within_the_bound(
    rabbit, tmp_path, always_fresh, monkeypatch
):
    bound = 1.0
    answered = asyncio.Event()  # RabbitMQ answered a passive declare
    declare = QueueStats._declare

    async def watched(connection, queue):
        try:
            return await declare(connection, queue)
        finally:
            answered.set()

    monkeypatch.setattr(QueueStats, "_declare", staticmethod(watched))
    settings, ops = make_settings(tmp_path, rabbit.url, stall_seconds=bound)
    add = ops["math.add"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        assert (await stats_of(http, add))["queue"] is not None
        answered.clear()
        rabbit.pause()
        try:
            began = time.monotonic()
            paused = await stats_of(http, add)
            took = time.monotonic() - began
            assert paused["queue"] is None
            assert "did not answer within 1 s" in paused["queue_error"]
            assert paused["accepted"] == 0 and paused["complete"] is True  # the store answers
            assert bound - 0.05 <= took < bound + 1.5, took
            # The ask still waiting on RabbitMQ is not made again: the next is told at once.
            began = time.monotonic()
            again = await stats_of(http, add)
            assert again["queue"] is None and time.monotonic() - began < 0.5
            assert not answered.is_set()
        finally:
            rabbit.resume()
        # The ask left waiting gets its answer once RabbitMQ is back; then so do requests.
        await asyncio.wait_for(answered.wait(), 30)
        assert (await stats_of(http, add))["queue"] == {"name": add, "messages": 0, "consumers": 0}


async def test_a_deleted_queue_is_said_so(rabbit, tmp_path, always_fresh):
    """A queue gone from RabbitMQ (an operator deleted it): null with the reason, not
    zeros; and the failed declare closes only its own channel: publishing goes on."""
    settings, ops = make_settings(tmp_path, rabbit.url)
    add, echo = ops["math.add"], ops["echo"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        rabbit.ctl("-q", "delete_queue", add)
        gone = await stats_of(http, add)
        assert gone["queue"] is None
        assert f"no queue {add}" in gone["queue_error"]
        r = await http.post(f"/v1/ops/{echo}", json={})
        assert r.status_code == 202, r.text
        assert (await stats_of(http, echo))["queue"]["messages"] == 1


async def test_unknown_operations_and_scopes(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.get("/v1/ops/no.such.op/stats")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_op"
    auth = AuthSettings(api_keys_file=key_file(tmp_path, ops))
    add, echo = ops["math.add"], ops["echo"]
    async with serve_gateway(replace(settings, auth=auth), ops) as gw, gw.client() as http:
        r = await http.get(f"/v1/ops/{add}/stats")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        # alice may submit to math.add only; bob to everything.
        r = await http.get(f"/v1/ops/{echo}/stats", headers=bearer(KEYS["alice"]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        await stats_of(http, add, headers=bearer(KEYS["alice"]))
        await stats_of(http, echo, headers=bearer(KEYS["bob"]))
        r = await http.get("/v1/ops/no.such.op/stats", headers=bearer(KEYS["bob"]))
        assert r.status_code == 404
        # A job token opens its job, not the operation's figures.
        r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers=bearer(KEYS["alice"]))
        token = r.json()["job_token"]
        r = await http.get(f"/v1/ops/{add}/stats?access_token={token}")
        assert r.status_code == 401
