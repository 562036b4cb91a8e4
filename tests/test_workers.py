"""`gateway serve --workers N`: N processes on one port answer for every job, light ones
included; the supervisor restarts a killed process without losing accepted jobs, and
SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import orjson

from gateway.worker import Worker
from tests.fault_support import GatewayProcess, metric, poll_until, sse_events
from tests.support import TcpProxy, connection_per_process, free_port, make_settings
from tests.test_lifecycle import contract


def children(pid: int) -> set[int]:
    """The supervisor's child processes (the gateway processes), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    # The spawn start method also runs a resource tracker: not a gateway process.
    return {
        child
        for child in found
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@asynccontextmanager
async def gateway_processes(
    tmp_path: Path, rabbit_url: str, workers: int = 2, options: Sequence[str] = ()
) -> AsyncIterator[tuple[GatewayProcess, dict[str, str]]]:
    settings, ops = make_settings(
        tmp_path,
        rabbit_url,
        {
            "quick": contract(durability="light"),
            "held": contract(durability="light", lease_seconds=600),
        },
    )
    gateway = GatewayProcess(
        free_port(),
        rabbit_url,
        settings.contracts_dir,
        settings.store_url,
        tmp_path / "gateway.log",
        log_level="info",
        options=["--workers", str(workers), *options],
    )
    await gateway.start()
    try:
        yield gateway, ops
    finally:
        await gateway.stop()


async def test_a_light_job_is_followed_through_another_process(rabbit, tmp_path, run_worker):
    release = asyncio.Event()
    cancelled = asyncio.Event()
    async with gateway_processes(tmp_path, rabbit.url) as (gateway, ops):
        worker = Worker(rabbit.url)

        @worker.operation(ops["quick"])
        async def quick(request, job):
            return {"echo": request}

        @worker.operation(ops["held"])
        async def held(request, job):
            await job.started()
            await job.progress({"done": 1, "total": 2})
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return {"released": request}

        await run_worker(worker)
        async with AsyncExitStack() as stack:
            by_slot = await connection_per_process(stack, gateway.url, ops["quick"], 2)
            here, there = by_slot["0"], by_slot["1"]
            # Accepted by the process in slot 0, followed through the one in slot 1.
            r = await here.post(f"/v1/ops/{ops['held']}", json={"n": 1})
            assert r.status_code == 202
            job_id = r.json()["id"]
            assert job_id.endswith(".0")
            location = r.headers["location"]

            shown = await there.get(location)
            assert shown.status_code == 200, shown.text
            assert shown.json()["id"] == job_id
            running = await there.get(f"{location}?wait=10&after=1")
            assert running.json()["status"] == "running"

            async def stream() -> list[str]:
                headers = {"accept": "text/event-stream"}
                async with there.stream("GET", f"{location}/events", headers=headers) as sse:
                    assert sse.status_code == 200
                    assert sse.headers["content-type"].startswith("text/event-stream")
                    seen = []
                    async for event in sse_events(sse):
                        seen.append(event.event)
                        if event.event == "progress":
                            release.set()  # the stream is live: let the job end
                    return seen

            async with AsyncExitStack() as streams:
                # The long-poll and the stream need a connection each to slot 1: the
                # first, kept alive, is the stream's; the long-poll gets its own.
                polls = await connection_per_process(streams, gateway.url, ops["quick"], 2)
                waited = asyncio.create_task(polls["1"].get(f"{location}?wait=30"))
                seen = await asyncio.wait_for(stream(), 30)
                finished = (await waited).json()
            assert seen == ["queued", "started", "progress", "result"]
            assert finished["status"] == "succeeded"
            assert finished["result"] == {"released": {"n": 1}}
            events = (await there.get(f"{location}/events")).json()
            assert [e["type"] for e in events["events"]] == seen

            # Cancelled through the other process: the owner cancels, its worker hears.
            release.clear()
            r = await here.post(f"/v1/ops/{ops['held']}", json={"n": 2})
            location = r.headers["location"]
            assert (await there.get(f"{location}?wait=10&after=2")).json()["status"] == "running"
            gone = await there.delete(location)
            assert gone.status_code == 200, gone.text
            assert gone.json()["status"] == "cancelled"
            await asyncio.wait_for(cancelled.wait(), 30)
            assert (await here.get(location)).json()["status"] == "cancelled"

            # One Idempotency-Key, one job, whichever process each try lands on.
            keyed = {"idempotency-key": "one-key"}
            first = await here.post(f"/v1/ops/{ops['quick']}?wait=10", json={}, headers=keyed)
            again = await there.post(f"/v1/ops/{ops['quick']}?wait=10", json={}, headers=keyed)
            assert first.status_code == again.status_code == 200
            assert first.json()["id"] == again.json()["id"]

            # A light job of a slot that no process holds, or an id of no slot: 404 alike.
            for unknown in (f"{job_id[:-2]}.7", "nosuchjob"):
                missing = await there.get(f"/v1/jobs/{unknown}")
                assert missing.status_code == 404
                assert missing.json()["error"]["code"] == "job_not_found"


async def test_a_killed_process_is_restarted_and_no_accepted_job_is_lost(
    rabbit, tmp_path, run_worker
):
    async with gateway_processes(tmp_path, rabbit.url) as (gateway, ops):
        assert gateway.process is not None
        supervisor = gateway.process.pid
        before = children(supervisor)
        assert len(before) == 2
        add = ops["math.add"]
        accepted: list[str] = []
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            for n in range(20):
                r = await http.post(f"/v1/ops/{add}", json={"a": n, "b": 1})
                assert r.status_code == 202
                accepted.append(r.headers["location"])
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            # The other process serves on meanwhile; fresh connections, so some would
            # have gone to the dead one were it still listening.
            for n in range(20, 40):
                async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as fresh:
                    r = await fresh.post(f"/v1/ops/{add}", json={"a": n, "b": 1})
                assert r.status_code == 202, r.text
                accepted.append(r.headers["location"])
            await poll_until(lambda: len(children(supervisor) - {victim}) == 2, 60)
            assert victim not in children(supervisor)

            worker = Worker(rabbit.url)

            @worker.operation(add)
            async def adder(request, job):
                return {"sum": request["a"] + request["b"]}

            # Waiting in both processes: one takes the answers (gateway.answers has a
            # single active consumer), and wakes the other's waiters through RabbitMQ.
            async with AsyncExitStack() as stack:
                by_slot = await connection_per_process(stack, gateway.url, ops["quick"], 2)
                waits = [
                    asyncio.create_task(connection.get(f"{accepted[0]}?wait=30"))
                    for connection in by_slot.values()
                ]
                await run_worker(worker)
                async with asyncio.timeout(15):  # well before the wait runs out
                    for waited in waits:
                        assert (await waited).json()["status"] == "succeeded"
            for n, location in enumerate(accepted):
                job = (await http.get(f"{location}?wait=30")).json()
                assert job["status"] == "succeeded", job
                assert job["result"] == {"sum": n + 1}


class NewConnectionsGate(TcpProxy):
    """A proxy to RabbitMQ that can keep new connections waiting; open ones flow on."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.admitting = asyncio.Event()
        self.admitting.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.admitting.wait()
        await super()._serve(reader, writer)


async def test_a_restarted_process_takes_no_connections_before_it_can_publish(rabbit, tmp_path):
    """The interleaving that once gave 503s beside a ready sibling: a killed process's
    successor starts while it cannot reach RabbitMQ (its connection held at a gate)."""
    port = int(rabbit.url.rsplit(":", 1)[1].split("/")[0])
    async with NewConnectionsGate(port) as gate:
        broker = rabbit.url.replace(f":{port}/", f":{gate.port}/")
        async with gateway_processes(tmp_path, broker) as (gateway, ops), AsyncExitStack() as stack:
            assert gateway.process is not None
            log = gateway.log
            # Both processes publish before the gate closes. (`start` returns when one
            # answers /readyz: were the other still connecting, closing the gate would
            # leave it unable to publish too, and killing the ready one gave only 503s.)
            await poll_until(lambda: log.read_text().count("Application startup complete") == 2)
            await connection_per_process(stack, gateway.url, ops["quick"], 2)
            victim = min(children(gateway.process.pid))
            gate.admitting.clear()
            os.kill(victim, signal.SIGKILL)
            # The successor is starting (uvicorn logs this once per process start).
            await poll_until(lambda: log.read_text().count("Waiting for application startup") == 3)
            statuses: Counter[int] = Counter()
            for n in range(40):  # fresh connections: any listening process may take one
                async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as fresh:
                    r = await fresh.post(f"/v1/ops/{ops['math.add']}", json={"a": n, "b": 1})
                statuses[r.status_code] += 1
            gate.admitting.set()
            await poll_until(lambda: log.read_text().count("Application startup complete") == 3)
    assert statuses == {202: 40}, statuses


async def test_sigterm_drains_the_requests_in_flight(rabbit, tmp_path, run_worker):
    started = {"math.add": asyncio.Event(), "held": asyncio.Event()}
    release = asyncio.Event()
    async with gateway_processes(tmp_path, rabbit.url) as (gateway, ops):
        assert gateway.process is not None
        worker = Worker(rabbit.url)

        async def slow(request, job, name):
            started[name].set()
            await release.wait()
            return {"sum": request["a"] + request["b"]}

        worker.operation(ops["math.add"])(lambda r, j: slow(r, j, "math.add"))
        worker.operation(ops["held"])(lambda r, j: slow(r, j, "held"))
        await run_worker(worker)
        processes = children(gateway.process.pid)
        async with AsyncExitStack() as stack:
            by_slot = await connection_per_process(stack, gateway.url, ops["quick"], 2)
            # In flight: a durable call on slot 1, and a light job's long-poll forwarded
            # from slot 1 to slot 0, that holds the job and serves nothing else.
            call = asyncio.create_task(
                by_slot["1"].post(f"/v1/ops/{ops['math.add']}?wait=20", json={"a": 2, "b": 3})
            )
            light = await by_slot["0"].post(f"/v1/ops/{ops['held']}", json={"a": 4, "b": 5})
            assert light.json()["id"].endswith(".0")
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 30)
            poll = (await connection_per_process(stack, gateway.url, ops["quick"], 2))["1"]
            forwarded = asyncio.create_task(
                poll.get(f"{light.headers['location']}?wait=20&after=1")
            )

            probe = (await connection_per_process(stack, gateway.url, ops["quick"], 2))["0"]
            for _ in range(200):  # until slot 0 holds the forwarded poll
                if forwarded.done():  # it should be held, not answered: say how it ended
                    raise AssertionError(f"the forwarded long-poll ended: {forwarded.result()}")
                exposition = (await probe.get("/metrics")).text
                if metric(exposition, "gateway_waiters") == 1:
                    break
                await asyncio.sleep(0.05)  # a scrape: there is no event to await
            else:
                raise AssertionError("the forwarded long-poll never reached slot 0")
            gateway.process.send_signal(signal.SIGTERM)
            # Draining: both processes are shutting down, and the calls in flight are
            # still answered (within the 5 s of graceful shutdown).
            await poll_until(lambda: gateway.log.read_text().count("Shutting down") == 2, 10)
            # Slot 0, with no request of its own, goes on to stop its app while the
            # forwarded poll still waits there.
            await poll_until(lambda: "Waiting for application shutdown" in gateway.log.read_text())
            release.set()
            r = await asyncio.wait_for(call, 10)
            followed = await asyncio.wait_for(forwarded, 10)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"sum": 5}
        assert followed.status_code == 200, followed.text
        assert followed.json()["status"] == "succeeded"
        assert followed.json()["result"] == {"sum": 9}
        async with asyncio.timeout(20):
            code = await gateway.process.wait()
        assert code == 0, gateway.log.read_text()[-3000:]
        assert not any(running(pid) for pid in processes)
        log = gateway.log.read_text()
        assert "Traceback" not in log, log[-3000:]


async def test_a_job_token_from_one_process_opens_the_job_in_another(rabbit, tmp_path, run_worker):
    """With auth on and no --job-token-secret, every process signs with the one secret the
    supervisor made; owners are checked by whichever process serves."""
    keys = tmp_path / "keys.json"
    keys.write_bytes(
        orjson.dumps(
            {
                "keys": [
                    {"key": "alice-key", "subject": "alice", "scopes": ["ops:*"]},
                    {"key": "bob-key", "subject": "bob", "scopes": ["ops:*"]},
                ]
            }
        )
    )
    async with gateway_processes(tmp_path, rabbit.url, options=["--api-keys", str(keys)]) as (
        gateway,
        ops,
    ):
        worker = Worker(rabbit.url)

        @worker.operation(ops["quick"])
        async def quick(request, job):
            return {}

        @worker.operation(ops["math.add"])
        async def add(request, job):
            return {"sum": request["a"] + request["b"]}

        await run_worker(worker)
        alice = {"authorization": "Bearer alice-key"}
        async with AsyncExitStack() as stack:
            found = await connection_per_process(stack, gateway.url, ops["quick"], 2, headers=alice)
            here, there = found["0"], found["1"]
            for op, body in ((ops["math.add"], {"a": 1, "b": 2}), (ops["quick"], {})):
                r = await here.post(f"/v1/ops/{op}?wait=10", json=body, headers=alice)
                assert r.status_code == 200, r.text
                job = r.json()
                location = r.headers["location"]
                opened = await there.get(f"{location}/events?access_token={job['job_token']}")
                assert opened.status_code == 200, opened.text
                assert opened.json()["events"][-1]["type"] == "result"
                bob = await there.get(location, headers={"authorization": "Bearer bob-key"})
                assert bob.status_code == 404
