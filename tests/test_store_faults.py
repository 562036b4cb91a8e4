"""The job store as a failure domain: two gateway instances on one PostgreSQL database,
under a careful client's keyed load, while PostgreSQL restarts, pauses (SIGSTOP) or is
killed (SIGKILL).

The promise: a store that cannot serve is a 503 with Retry-After — fast, never a 500 and
never a request that hangs — and `/readyz` says so; nothing that got a 202 is lost, and
no work runs under an id nobody holds, whichever step the outage interrupts. Figures
with `pytest -s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from gateway.config import Settings
from tests.fault_support import CarefulLoad, KeyedTally, readyz_until, settle
from tests.postgres_support import PostgresServer, fresh_database
from tests.support import RabbitNode, make_settings, serve_gateway
from tests.test_stalls import counting_adder
from tests.test_streaming import stepped_reporter

STALL = 1.0
STORE_TIMEOUT = 3.0
FAULT_SECONDS = 6.0

Fault = Callable[[PostgresServer, httpx.AsyncClient], Awaitable[str]]


async def store_settings(
    postgres: PostgresServer, rabbit: RabbitNode, tmp_path
) -> tuple[Settings, dict[str, str]]:
    return make_settings(
        tmp_path,
        rabbit.url,
        store_url=await fresh_database(postgres.url),
        stall_seconds=STALL,
        store_timeout_seconds=STORE_TIMEOUT,
    )


async def store_fault_under_keyed_load(
    postgres: PostgresServer, rabbit: RabbitNode, tmp_path, run_worker, name: str, fault: Fault
) -> KeyedTally:
    settings, ops = await store_settings(postgres, rabbit, tmp_path)
    tally = KeyedTally(name)
    op = ops["math.add"]
    async with (
        serve_gateway(settings, ops) as a,
        serve_gateway(settings, ops, take_over=False) as b,
        a.client() as http_a,
        b.client() as http_b,
    ):
        await run_worker(counting_adder(a, rabbit.url, tally.executed))
        loads = [CarefulLoad(http, op, tally, client_timeout=5.0) for http in (http_a, http_b)]
        for load in loads:
            load.start(2)
        try:
            await loads[0].until(lambda: len(tally.held) >= 30)
            seen = await fault(postgres, http_a)
            held = len(tally.held)
            await loads[0].until(lambda: len(tally.held) >= held + 30, limit=90)
        finally:
            for load in loads:
                await load.stop()
        await settle(http_b, tally)
    slowest = max(tally.refusal_seconds, default=0.0)
    tally.report(f"{seen}; slowest 503 {slowest:.2f}s")
    assert tally.statuses[500] == 0
    assert tally.not_found == 0
    assert tally.lost == 0
    assert tally.executed_unheld == 0, tally.executed
    # Nothing hangs: a request in flight when the store stalled waits out the store
    # timeout at most (the client's is longer), later ones are refused at once.
    assert slowest < STORE_TIMEOUT + 1.5, tally.refusal_seconds
    assert tally.timeouts == 0
    return tally


async def restart(postgres: PostgresServer, http: httpx.AsyncClient) -> str:
    await asyncio.to_thread(postgres.restart)
    return "restarted"


async def pause(postgres: PostgresServer, http: httpx.AsyncClient) -> str:
    began = time.monotonic()
    postgres.pause()
    try:
        to_not_ready = await readyz_until(http, 503, limit=15, problem="store")
        await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - began)))
    finally:
        postgres.resume()
    to_ready = await readyz_until(http, 200, limit=30)
    return f"not ready after {to_not_ready:.2f}s, ready {to_ready:.2f}s after the pause"


async def kill(postgres: PostgresServer, http: httpx.AsyncClient) -> str:
    began = time.monotonic()
    postgres.kill()
    to_not_ready = await readyz_until(http, 503, limit=15, problem="store")
    await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - began)))
    await asyncio.to_thread(postgres.start_server)
    to_ready = await readyz_until(http, 200, limit=30)
    return f"not ready after {to_not_ready:.2f}s, ready {to_ready:.2f}s after the restart"


async def test_store_restarted_under_keyed_load(postgres, rabbit, tmp_path, run_worker):
    await store_fault_under_keyed_load(
        postgres, rabbit, tmp_path, run_worker, "PostgreSQL restarted", restart
    )


async def test_store_paused_under_keyed_load(postgres, rabbit, tmp_path, run_worker):
    await store_fault_under_keyed_load(
        postgres, rabbit, tmp_path, run_worker, "PostgreSQL paused (SIGSTOP)", pause
    )


async def test_store_killed_under_keyed_load(postgres, rabbit, tmp_path, run_worker):
    await store_fault_under_keyed_load(
        postgres, rabbit, tmp_path, run_worker, "PostgreSQL killed (SIGKILL)", kill
    )


async def test_store_lost_between_confirm_and_record(postgres, rabbit, tmp_path, run_worker):
    """The step after RabbitMQ's confirm — recording that the request was published —
    fails: the answer must be a 503 (not a 500), and the client's retry must get that same
    job, so the work runs under the one id it holds."""
    settings, ops = await store_settings(postgres, rabbit, tmp_path)
    tally = KeyedTally("store lost between the confirm and its record")
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(counting_adder(gw, rabbit.url, tally.executed))
        broker = gw.service.broker
        publish = broker.publish_request

        async def publish_then_lose_the_store(*args, **kwargs):
            await publish(*args, **kwargs)
            broker.publish_request = publish  # once
            await asyncio.to_thread(postgres.stop_server)

        broker.publish_request = publish_then_lose_the_store
        op = ops["math.add"]
        headers = {"Idempotency-Key": "after-the-confirm"}
        first = await http.post(f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers=headers)
        tally.statuses[first.status_code] += 1
        await asyncio.to_thread(postgres.start_server)
        load = CarefulLoad(http, op, tally)
        job_id = await load.submit_one("after-the-confirm", {"a": 1, "b": 2})
        job = (await http.get(f"/v1/jobs/{job_id}?wait=30")).json()
        tally.succeeded = int(job["status"] == "succeeded")
    tally.report(f"first answer {first.status_code}")
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "store_unavailable"
    assert job["status"] == "succeeded", job
    assert set(tally.executed) == {job_id}, tally.executed


async def test_a_stream_outlives_a_paused_store(postgres, rabbit, tmp_path, run_worker):
    """An open event stream neither hangs nor ends while the store is paused: it keeps
    beating, and delivers every event, in order, once the store is back."""
    settings, ops = await store_settings(postgres, rabbit, tmp_path)
    settings = replace(settings, sse_ping_seconds=30)  # the pings below are the outage's
    steps = [asyncio.Event() for _ in range(3)]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(stepped_reporter(gw, rabbit.url, steps))
        r = await http.post(f"/v1/ops/{ops['report.generate']}", json={"title": "T"})
        seen: list[tuple[int, str]] = []
        pings = 0
        async with http.stream(
            "GET", f"{r.headers['location']}/events", headers={"Accept": "text/event-stream"}
        ) as stream:
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("id: "):
                    seen.append((int(line[4:]), ""))
                    break  # queued
            postgres.pause()
            try:
                for step in steps:
                    step.set()  # the worker answers while the store is paused
                # As a broker reconnect does: every stream reads the store again, now.
                gw.service.hub.wake_all()
                async for line in lines:
                    pings += line == ": ping"
                    if pings == 2:  # the stream is alive through the pause
                        break
            finally:
                postgres.resume()
            async for line in lines:
                if line.startswith("id: "):
                    seen.append((int(line[4:]), ""))
                elif line.startswith("event: "):
                    seen[-1] = (seen[-1][0], line[7:])
    print(f"\n[stream across a paused store] events {len(seen)}, pings while paused {pings}")
    assert [seq for seq, _ in seen] == [1, 2, 3, 4, 5]
    assert [kind for _, kind in seen][1:] == ["progress", "progress", "progress", "result"]
