"""RabbitMQ that stalls instead of dying — paused with SIGSTOP, or blocking publishers
under a memory or a disk alarm — against a careful client: an Idempotency-Key on every
request, retried on timeouts, 503s and connection errors.

The promise, under each: an id a client holds is never forgotten; one key is one job id,
at the broker too, so no work runs under an id nobody holds; while RabbitMQ stalls,
`/readyz` says not ready and submits fail fast with Retry-After; a worker's lease does not
lapse while the gateway cannot hear RabbitMQ. Figures with `pytest -s`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx

from gateway.worker import Worker
from tests.fault_support import CarefulLoad, KeyedTally, poll_until, readyz_until, settle
from tests.support import RabbitNode, RunningGateway, make_settings, serve_gateway

STALL = 1.0  # the gateway's stall threshold in these tests (the default is 2 s)
PUBLISH_TIMEOUT = 5.0  # its confirm timeout (the default)
FAULT_SECONDS = 8.0  # how long each fault lasts: past the publish and client timeouts


def counting_adder(gateway: RunningGateway, rabbit_url: str, executed: Counter[str]) -> Worker:
    """math.add, counting every run by job id (= the request's message_id)."""
    worker = Worker(rabbit_url)

    @worker.operation(gateway.op("math.add"))
    async def add(request, job):
        executed[job.id] += 1
        return {"sum": request["a"] + request["b"]}

    return worker


async def stall_under_keyed_load(
    rabbit: RabbitNode,
    tmp_path,
    run_worker,
    name: str,
    begin: Callable[[], None],
    end: Callable[[], None],
) -> KeyedTally:
    """Careful keyed load through a stall of RabbitMQ that `begin` starts and `end` ends."""
    settings, ops = make_settings(
        tmp_path, rabbit.url, publish_timeout_seconds=PUBLISH_TIMEOUT, stall_seconds=STALL
    )
    tally = KeyedTally(name)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(counting_adder(gw, rabbit.url, tally.executed))
        load = CarefulLoad(http, gw.op("math.add"), tally, client_timeout=3.0)
        load.start(4)
        try:
            await load.until(lambda: len(tally.held) >= 30)
            await asyncio.to_thread(begin)
            began = time.monotonic()
            try:
                # Not ready within a stall threshold or two (plus rabbitmqctl's own time)...
                to_not_ready = await readyz_until(http, 503, limit=15)
                # ... and from then on a submit is refused at once, not after 5 s.
                refusals = len(tally.refusal_seconds)
                await load.until(lambda: len(tally.refusal_seconds) >= refusals + 20)
                fast = tally.refusal_seconds[refusals:]
                await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - began)))
            finally:
                await asyncio.to_thread(end)
            to_ready = await readyz_until(http, 200, limit=60)
            held = len(tally.held)
            await load.until(lambda: len(tally.held) >= held + 30)
        finally:
            await load.stop()
        await settle(http, tally)
    tally.report(
        f"not ready after {to_not_ready:.2f}s, ready again {to_ready:.2f}s after the end; "
        f"503s while stalled took at most {max(fast):.3f}s"
    )
    assert max(fast) < PUBLISH_TIMEOUT / 2, fast  # fail fast, not after the confirm timeout
    assert tally.not_found == 0
    assert tally.lost == 0
    assert tally.executed_unheld == 0, tally.executed
    assert tally.statuses[500] == 0
    return tally


async def test_broker_paused_under_keyed_load(rabbit, tmp_path, run_worker) -> None:
    await stall_under_keyed_load(
        rabbit, tmp_path, run_worker, "broker paused (SIGSTOP)", rabbit.pause, rabbit.resume
    )


async def test_broker_memory_alarm_under_keyed_load(rabbit, tmp_path, run_worker) -> None:
    await stall_under_keyed_load(
        rabbit,
        tmp_path,
        run_worker,
        "broker memory alarm",
        lambda: rabbit.memory_alarm(True),
        lambda: rabbit.memory_alarm(False),
    )


async def test_broker_disk_alarm_under_keyed_load(rabbit, tmp_path, run_worker) -> None:
    await stall_under_keyed_load(
        rabbit,
        tmp_path,
        run_worker,
        "broker disk alarm",
        lambda: rabbit.disk_alarm(True),
        lambda: rabbit.disk_alarm(False),
    )


async def test_a_retry_racing_a_stalled_publish_gets_the_same_id(
    rabbit, tmp_path, run_worker
) -> None:
    """The interleaving that lost 8 of 8 keys: a publish stalls; the client times out and
    retries the key, and the retry publishes the job again while the first still waits;
    the first times out (503); RabbitMQ wakes; the retry gets 202. That id must exist, and
    be the only one the broker ever saw for the key."""
    publish_timeout = 4.0
    # A stall threshold past the publish timeout: the retry publishes (as it would in
    # the first moments of a stall, or on another instance) instead of failing fast.
    settings, ops = make_settings(
        tmp_path, rabbit.url, publish_timeout_seconds=publish_timeout, stall_seconds=60
    )
    keys = [f"race-{n}" for n in range(8)]
    tally = KeyedTally("a retry racing a stalled publish")
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(counting_adder(gw, rabbit.url, tally.executed))
        op = gw.op("math.add")

        def post(key: str) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(
                http.post(f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers={"Idempotency-Key": key})
            )

        stall = gw.service.broker.stall
        rabbit.pause()
        try:
            firsts = [post(key) for key in keys]
            await poll_until(lambda: stall.in_flight >= len(keys))  # every first publish waits
            await asyncio.sleep(publish_timeout / 2)  # the client's own timeout, say
            retries = [post(key) for key in keys]
            await poll_until(lambda: stall.in_flight >= 2 * len(keys))  # published again
            firsts_answered = await asyncio.gather(*firsts)
        finally:
            rabbit.resume()
        retried = await asyncio.gather(*retries)
        assert [r.status_code for r in firsts_answered] == [503] * len(keys)
        assert [r.status_code for r in retried] == [202] * len(keys), [r.text for r in retried]
        for key, r in zip(keys, retried, strict=True):
            tally.held[key] = r.json()["id"]
        await settle(http, tally)
        # Both copies of each request reach the worker, under the one id the client holds.
        await poll_until(lambda: sum(tally.executed.values()) >= 2 * len(keys), limit=30)
    tally.report()
    assert tally.not_found == 0
    assert tally.lost == 0
    assert tally.executed_unheld == 0, tally.executed
    assert set(tally.executed) == set(tally.held.values())


async def test_a_lease_does_not_lapse_while_the_broker_is_paused(
    rabbit, tmp_path, run_worker
) -> None:
    lease = 2.0
    settings, ops = make_settings(tmp_path, rabbit.url, stall_seconds=STALL)
    # report.generate with a short lease: a worker heard from every lease/3 seconds.
    contract = settings.contracts_dir / f"{ops['report.generate']}.json"
    contract.write_bytes(
        contract.read_bytes().replace(b'"x-gateway": {', b'"x-gateway": {"lease_seconds": 2, ', 1)
    )
    finish = asyncio.Event()
    worker = Worker(rabbit.url)

    @worker.operation(ops["report.generate"], long_running=True)
    async def generate(request, job):
        await finish.wait()
        return {"title": request["title"], "sections": []}

    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(worker)
        r = await http.post(f"/v1/ops/{ops['report.generate']}", json={"title": "long"})
        location = r.headers["location"]
        running = (await http.get(f"{location}?wait=10&after=1")).json()
        assert running["status"] == "running", running
        rabbit.pause()
        try:
            await readyz_until(http, 503, limit=10)
            await asyncio.sleep(3 * lease)  # the fault: three leases without a word
        finally:
            rabbit.resume()
        await readyz_until(http, 200, limit=30)
        # The worker is heard again within its lease: it was never lost.
        await asyncio.sleep(lease * 1.5)
        finish.set()
        job = (await http.get(f"{location}?wait=30")).json()
    assert job["status"] == "succeeded", job


async def test_a_key_nobody_retries_ends_known_to_have_failed(rabbit, tmp_path) -> None:
    """A keyed request whose publish was never confirmed, and that the client never
    retried, is not left queued forever: after a grace it fails `not_published`, which is
    what a client that comes back with the key then learns."""
    settings, ops = make_settings(
        tmp_path, rabbit.url, publish_timeout_seconds=1.0, stall_seconds=60
    )
    op = ops["math.add"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        rabbit.pause()
        try:
            r = await http.post(
                f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers={"Idempotency-Key": "once"}
            )
        finally:
            rabbit.resume()
        assert r.status_code == 503, r.text
        await gw.service.sweep(now=time.time() + settings.unconfirmed_seconds + 1)
        again = await http.post(
            f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers={"Idempotency-Key": "once"}
        )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "failed"
    assert again.json()["error"]["code"] == "not_published"
