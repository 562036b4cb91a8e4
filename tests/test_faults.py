"""Faults with real processes: the broker restarted under load, the gateway SIGKILLed with
jobs in flight, a worker SIGKILLed mid-job, the gateway-broker link cut. Each test prints a
figure line (`pytest -s`): requests sent, accepted, finished, lost; lost must be 0."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.worker import Worker
from tests.fault_support import (
    GatewayProcess,
    HoldingProxy,
    Milestones,
    SseEvent,
    Tally,
    WorkerProcess,
    assert_contiguous,
    assert_error_body,
    events_of,
    finish_all,
    metric,
    sse_events,
    store_job_ids,
)
from tests.support import free_port, make_settings, serve_gateway
from tests.test_round_trip import adder

PACE = 0.02  # a load generator's pause after a refusal, so it does not spin


class Load(Milestones):
    """Concurrent submitters of `math.add` until stopped; wakes waiters on milestones."""

    def __init__(self, http: httpx.AsyncClient, op: str, tally: Tally, limit: float) -> None:
        self.http = http
        self.op = op
        self.tally = tally
        self.limit = limit  # an upper bound on any one request
        self.stopping = asyncio.Event()
        self.refusal_seconds: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        super().__init__()

    def start(self, submitters: int = 3) -> None:
        self._tasks = [asyncio.create_task(self._submit(n)) for n in range(submitters)]

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self._tasks)

    async def _submit(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            started = time.monotonic()
            async with asyncio.timeout(self.limit):
                r = await self.http.post(f"/v1/ops/{self.op}", json={"a": n, "b": i})
            took = time.monotonic() - started
            if r.status_code in (200, 202):
                self.tally.count(r.status_code, r.json()["id"])
            else:
                assert_error_body(r, 503)
                assert r.json()["error"]["code"].startswith("broker_"), r.text
                assert int(r.headers["retry-after"]) >= 1
                self.tally.count(r.status_code)
                self.refusal_seconds.append(took)
            self.seen()
            if r.status_code == 503:
                await asyncio.sleep(PACE)


async def test_broker_restart_under_load(rabbit, tmp_path, run_worker) -> None:
    publish_timeout = 30.0
    settings, ops = make_settings(tmp_path, rabbit.url, publish_timeout_seconds=publish_timeout)
    tally = Tally("broker restart under load")
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(adder(gw, rabbit.url))
        load = Load(http, gw.op("math.add"), tally, limit=publish_timeout / 3)
        load.start(3)
        try:
            await load.until(lambda: tally.accepted >= 30)
            try:
                await asyncio.to_thread(rabbit.stop)
                ready = await http.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["checks"]["broker"] is False
                refused = tally.refused
                await load.until(lambda: tally.refused >= refused + 10)
            finally:
                await asyncio.to_thread(rabbit.start)
            assert await gw.service.broker.wait_ready(60), "the gateway did not reconnect"
            assert (await http.get("/readyz")).status_code == 200
            accepted = tally.accepted
            await load.until(lambda: tally.accepted >= accepted + 30)
        finally:
            await load.stop()
        await finish_all(http, tally)
        orphans = metric(
            (await http.get("/metrics")).text, "gateway_answers_total", outcome="unknown_job"
        )
    slowest = max(load.refusal_seconds)
    tally.report(f"slowest 503 {slowest:.2f}s; answers to unknown jobs {orphans:g}")
    assert tally.refused >= 10
    # 503s come from knowing the link is down, not from waiting out the publish timeout.
    assert slowest < publish_timeout / 3, load.refusal_seconds
    assert tally.lost == 0


async def test_broker_link_cut_under_load(rabbit, tmp_path, run_worker) -> None:
    publish_timeout = 10.0
    async with HoldingProxy(rabbit.port) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        settings, ops = make_settings(tmp_path, url, publish_timeout_seconds=publish_timeout)
        tally = Tally("broker link cut under load")
        async with serve_gateway(settings, ops) as gw, gw.client() as http:
            await run_worker(adder(gw, rabbit.url))  # the worker's own link is not cut
            broker = gw.service.broker
            publishing = 0
            crowd = asyncio.Event()
            want = 1
            original = broker.publish_request

            async def counted(*args: object, **kwargs: object) -> None:
                nonlocal publishing
                publishing += 1
                if publishing >= want:
                    crowd.set()
                try:
                    await original(*args, **kwargs)  # type: ignore[arg-type]
                finally:
                    publishing -= 1

            broker.publish_request = counted  # type: ignore[method-assign]
            op = gw.op("math.add")
            load = Load(http, op, tally, limit=publish_timeout * 2)
            load.start(3)
            burst = 8
            # Cuts 0 and 2 hold RabbitMQ's confirms first: every request of the burst is
            # waiting for its confirm at the cut. Cut 1 lands wherever the burst is.
            cuts = 3
            try:
                for n in range(cuts):
                    accepted = tally.accepted
                    await load.until(lambda a=accepted: tally.accepted >= a + 20)
                    held = n != 1
                    want = burst if held else 1
                    crowd.clear()
                    if held:
                        proxy.hold()
                    bursting = [
                        asyncio.create_task(http.post(f"/v1/ops/{op}", json={"a": n, "b": k}))
                        for k in range(burst)
                    ]
                    async with asyncio.timeout(10):
                        await crowd.wait()
                    for _ in range(10):  # loop turns: the publish frames reach the socket
                        await asyncio.sleep(0)
                    proxy.cut()
                    proxy.release()
                    async with asyncio.timeout(publish_timeout * 2):
                        answers = await asyncio.gather(*bursting)
                    for r in answers:
                        if r.status_code in (200, 202):
                            tally.count(r.status_code, r.json()["id"])
                        else:
                            assert_error_body(r, 503)
                            tally.count(r.status_code)
                    if held:
                        assert all(r.status_code == 503 for r in answers), [
                            r.status_code for r in answers
                        ]
                    assert await broker.wait_ready(30), "no reconnect through the proxy"
                accepted = tally.accepted
                await load.until(lambda: tally.accepted >= accepted + 20)
            finally:
                proxy.release()
                await load.stop()
            assert (await http.get("/readyz")).status_code == 200
            await finish_all(http, tally)
            orphans = metric(
                (await http.get("/metrics")).text, "gateway_answers_total", outcome="unknown_job"
            )
            stored = store_job_ids(settings.store_url, op)
    tally.report(
        f"cuts {cuts}, proxy connections {proxy.connections}; answers to unknown jobs "
        f"{orphans:g} (work for 503'd requests whose message had reached RabbitMQ)"
    )
    assert proxy.connections >= cuts + 1
    assert tally.lost == 0
    # A 503 leaves no job behind: the store holds exactly the accepted ones.
    assert stored == set(tally.accepted_ids)


async def test_worker_killed_mid_job_is_redelivered(gateway, rabbit, tmp_path) -> None:
    op = gateway.op("report.generate")
    tally = Tally("worker killed mid-job")
    hang = WorkerProcess(tmp_path, rabbit.url, op, "hang")
    finish = WorkerProcess(tmp_path, rabbit.url, op, "finish")
    try:
        async with gateway.client() as http:
            for n in range(3):
                r = await http.post(f"/v1/ops/{op}", json={"title": f"job {n}"})
                tally.count(r.status_code, r.json().get("id"))
            hang.start()
            # Each job is running in the first worker once its first progress event is in.
            for job_id in tally.accepted_ids:
                running = (await http.get(f"/v1/jobs/{job_id}?wait=30&after=1")).json()
                assert running["status"] == "running", running
                assert "hang" in running["progress"]["message"]
            await hang.kill()
            finish.start()
            jobs = await finish_all(http, tally, limit=60)
            logs = {j["id"]: await events_of(http, j["id"]) for j in jobs}
    finally:
        await hang.stop()
        await finish.stop()
    tally.report()
    assert tally.lost == 0
    for job in jobs:
        assert job["result"]["sections"] == ["finish"], job
        events = logs[job["id"]]
        assert_contiguous(events, job["id"])
        # The first worker's progress, then the second worker's whole run.
        assert [e["type"] for e in events] == [
            "queued",
            "progress",
            "progress",
            "progress",
            "result",
        ]


async def test_gateway_killed_with_jobs_in_flight(rabbit, tmp_path, run_worker) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url)
    op = ops["report.generate"]
    port = free_port()
    process = GatewayProcess(
        port, rabbit.url, settings.contracts_dir, settings.store_url, tmp_path / "gateway.log"
    )
    gated_titles = [f"gated {n}" for n in range(3)]
    phase2, phase3, all_second = asyncio.Event(), asyncio.Event(), asyncio.Event()
    second_sent: set[str] = set()
    chatty_sent = 0
    worker = Worker(rabbit.url, prefetch=16)

    @worker.operation(op)
    async def generate(request, job):
        nonlocal chatty_sent
        await job.started()
        title = request["title"]
        if title == "quick":
            return {"title": title, "sections": []}
        if title == "chatty":  # answers all the time, so the kill lands among them
            while not phase3.is_set():
                chatty_sent += 1
                await job.progress({"done": chatty_sent, "total": 1_000_000})
                await asyncio.sleep(0.005)  # the pace of a chatty worker
            return {"title": title, "sections": ["chatty"]}
        await job.progress({"done": 1, "total": 3})
        await phase2.wait()
        await job.progress({"done": 2, "total": 3})  # sent while no gateway runs
        second_sent.add(job.id)
        if len(second_sent) == len(gated_titles):
            all_second.set()
        await phase3.wait()
        await job.progress({"done": 3, "total": 3})
        return {"title": title, "sections": ["1", "2", "3"]}

    tally = Tally("gateway SIGKILLed with jobs in flight")
    received: dict[str, list[SseEvent]] = {}
    seen: dict[str, asyncio.Event] = {}

    async def read_stream(http: httpx.AsyncClient, job_id: str, resume: bool) -> bool:
        """Read a job's stream into `received`; True if it ended with the terminal event."""
        headers = {"Accept": "text/event-stream"}
        if resume:
            headers["Last-Event-ID"] = str(received[job_id][-1].id)
        try:
            async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
                assert r.status_code == 200, await r.aread()
                async for event in sse_events(r):
                    received[job_id].append(event)
                    if event.event == "progress" or len(received[job_id]) > 20:
                        seen[job_id].set()
                    if event.event in ("result", "error", "cancelled", "expired"):
                        return True
        except httpx.TransportError:
            return False
        return False

    quick_stop = asyncio.Event()

    async def quick_submitter(http: httpx.AsyncClient) -> None:
        """Submits quick jobs across the kill and the restart."""
        while not quick_stop.is_set():
            try:
                async with asyncio.timeout(10):
                    r = await http.post(f"/v1/ops/{op}", json={"title": "quick"})
            except httpx.TransportError:
                tally.count(0)  # no answer: the client cannot hold an id
                await asyncio.sleep(0.05)  # the pace of a retrying client
                continue
            tally.count(r.status_code, r.json().get("id") if r.status_code < 300 else None)

    try:
        await process.start()
        await run_worker(worker)
        async with httpx.AsyncClient(base_url=process.url, timeout=30) as http:
            ids = []
            for title in [*gated_titles, "chatty"]:
                r = await http.post(f"/v1/ops/{op}", json={"title": title})
                tally.count(r.status_code, r.json()["id"])
                ids.append(r.json()["id"])
                received[ids[-1]], seen[ids[-1]] = [], asyncio.Event()
            quick = asyncio.create_task(quick_submitter(http))
            streams = [asyncio.create_task(read_stream(http, i, False)) for i in ids]
            async with asyncio.timeout(20):
                for job_id in ids:
                    await seen[job_id].wait()
            await process.kill()
            async with asyncio.timeout(10):
                ended = await asyncio.gather(*streams)
            assert not any(ended), "a stream ended before the jobs did"
            phase2.set()
            async with asyncio.timeout(10):
                await all_second.wait()
            await process.start()  # the same port and store
            resumed = [asyncio.create_task(read_stream(http, i, True)) for i in ids]
            quick_stop.set()
            await quick
            phase3.set()
            async with asyncio.timeout(30):
                ended = await asyncio.gather(*resumed)
            assert all(ended), "a resumed stream did not reach the terminal event"
            await finish_all(http, tally)
            logs = {i: await events_of(http, i) for i in tally.accepted_ids}
    finally:
        await process.stop()
    duplicated_progress = 0
    for job_id in ids:
        got = [e.id for e in received[job_id]]
        assert got == list(range(1, len(got) + 1)), (job_id, got)  # no gap, no duplicate
        assert got == [e["seq"] for e in logs[job_id]], job_id
        done = [e.data["done"] for e in received[job_id] if e.event == "progress"]
        duplicated_progress += len(done) - len(set(done))
    for job_id, events in logs.items():
        assert_contiguous(events, job_id)
    for job_id in ids[:3]:
        assert [e["type"] for e in logs[job_id]] == [
            "queued",
            "started",
            "progress",
            "progress",
            "progress",
            "result",
        ]
    tally.report(
        f"streams resumed {len(ids)}; chatty progress sent {chatty_sent}, "
        f"redelivered duplicates {duplicated_progress}"
    )
    assert tally.lost == 0


async def test_an_answer_stored_but_not_acked_is_stored_once(gateway, rabbit, run_worker) -> None:
    """A progress answer is stored, but the store's reply is lost (the connection dropped
    after the commit), so it is not acked and RabbitMQ delivers it again — after the next
    progress was stored. It must be stored once: the log is what the worker sent."""
    op = gateway.op("report.generate")
    worker = Worker(rabbit.url)

    finish = asyncio.Event()

    @worker.operation(op)
    async def generate(request, job):
        for n in (1, 2, 3):
            await job.progress({"done": n, "total": 3})
        await finish.wait()  # the redelivery lands before the result
        return {"title": request["title"], "sections": ["1", "2", "3"]}

    store = gateway.service.store
    record = store.record
    lost_replies = 0

    async def record_then_lose_the_reply(job_id, type, data, **kwargs):
        nonlocal lost_replies
        recorded = await record(job_id, type, data, **kwargs)
        if type == "progress" and data["done"] == 1 and not lost_replies:
            lost_replies += 1
            raise ConnectionResetError("the connection dropped after the commit")
        return recorded

    store.record = record_then_lose_the_reply  # type: ignore[method-assign]
    await run_worker(worker)
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{op}", json={"title": "T"})
        location = r.headers["location"]
        assert (await http.get(f"{location}?wait=30&after=3")).json()["seq"] >= 4
        # The redelivered answer is either dropped (counted) or stored again (seq 5).
        async with asyncio.timeout(10):
            while True:
                redelivered = metric(
                    (await http.get("/metrics")).text,
                    "gateway_answers_total",
                    outcome="redelivered",
                )
                if redelivered or (await http.get(location)).json()["seq"] > 4:
                    break
                await asyncio.sleep(0.05)
        finish.set()
        job = (await http.get(f"{location}?wait=30")).json()
        events = await events_of(http, job["id"])
    assert lost_replies == 1
    assert job["status"] == "succeeded", job
    assert_contiguous(events, job["id"])
    assert [(e["type"], (e["data"] or {}).get("done")) for e in events] == [
        ("queued", None),
        ("progress", 1),
        ("progress", 2),
        ("progress", 3),
        ("result", None),
    ]
    assert redelivered == 1
