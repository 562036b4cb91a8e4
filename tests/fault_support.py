"""Helpers for the fault, hostile-input and fuzz tests: a tally of requests that prints
the figure line, a gateway and workers run as real processes, and a small SSE reader that
can resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from jsonschema import Draft7Validator

from tests.support import ROOT, TcpProxy, take_over_vhost

ERROR_SCHEMA = Draft7Validator(orjson.loads((ROOT / "schemas/wire/error.json").read_bytes()))
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
TERMINAL_EVENTS = {"result", "error", "cancelled", "expired"}


def assert_error_body(response: httpx.Response, *statuses: int) -> None:
    """`response` is one of `statuses` (any 4xx if none given) with the pinned error body."""
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:300])
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type"),
        response.text[:300],
    )
    ERROR_SCHEMA.validate(response.json())


@dataclass
class Tally:
    """What happened to the requests of a fault test; `lost` must end at 0."""

    name: str
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    finished: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    accepted_ids: list[str] = field(default_factory=list)

    def count(self, status: int, job_id: str | None = None) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status in (200, 202):
            self.accepted += 1
            assert job_id is not None
            self.accepted_ids.append(job_id)
        elif status == 503:
            self.refused += 1

    @property
    def lost(self) -> int:
        return self.accepted - self.finished

    def report(self, extra: str = "") -> str:
        line = (
            f"[{self.name}] requests sent {self.sent}, accepted {self.accepted}, "
            f"finished {self.finished}, lost {self.lost}"
            f" (503: {self.refused}; statuses {dict(sorted(self.statuses.items()))})"
        )
        if extra:
            line += f" {extra}"
        print("\n" + line, flush=True)
        return line


async def follow_to_end(http: httpx.AsyncClient, job_id: str, limit: float = 60) -> dict:
    """Long-poll a job until it is terminal (at most `limit` seconds); the last job seen."""
    job: dict = {}
    async with asyncio.timeout(limit):
        while True:
            r = await http.get(f"/v1/jobs/{job_id}?wait=30")
            assert r.status_code == 200, r.text
            job = r.json()
            if job["status"] in TERMINAL:
                return job


async def finish_all(http: httpx.AsyncClient, tally: Tally, limit: float = 90) -> list[dict]:
    """Follow every accepted job to its end; counts the ones that succeeded."""
    jobs = await asyncio.gather(*(follow_to_end(http, i, limit) for i in tally.accepted_ids))
    tally.finished = sum(1 for j in jobs if j["status"] == "succeeded")
    return list(jobs)


async def events_of(http: httpx.AsyncClient, job_id: str) -> list[dict]:
    """Every event of a job, page by page (a page holds a limited number)."""
    events: list[dict] = []
    while True:
        r = await http.get(f"/v1/jobs/{job_id}/events?after={len(events)}")
        assert r.status_code == 200, r.text
        page = r.json()["events"]
        if not page:
            return events
        events.extend(page)


def assert_contiguous(events: list[dict], job_id: str = "") -> None:
    """Seqs 1..n, none duplicated or skipped; exactly one terminal event, the last."""
    seqs = [e["seq"] for e in events]
    skipped_or_doubled = [s for n, s in enumerate(seqs, 1) if s != n]
    assert not skipped_or_doubled, (job_id, len(seqs), skipped_or_doubled[:20])
    terminal = [e["type"] for e in events if e["type"] in TERMINAL_EVENTS]
    assert len(terminal) == 1 and events[-1]["type"] in TERMINAL_EVENTS, (job_id, terminal)


def store_job_ids(store_url: str, op: str) -> set[str]:
    """Every job of `op` the SQLite store holds (read-only, beside the running gateway)."""
    path = store_url.removeprefix("sqlite:///")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM jobs WHERE op = ?", (op,))}
    finally:
        db.close()


def metric(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if labels else name
    for line in exposition.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


class HoldingProxy(TcpProxy):
    """A `TcpProxy` that can also hold what the broker sends (confirms among it), so a cut
    lands while publishes are still waiting for their confirms."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.flowing = asyncio.Event()
        self.flowing.set()

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event | None
        ) -> None:
            try:
                while data := await src.read(65536):
                    if gate is not None:
                        await gate.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, self.flowing))


# -- SSE ------------------------------------------------------------------------------


@dataclass
class SseEvent:
    id: int
    event: str
    data: object


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of an SSE response (comments, retry hints and pings skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "event" in fields or "data" in fields:
                yield SseEvent(
                    int(fields["id"]), fields.get("event", "message"), orjson.loads(fields["data"])
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


# -- processes --------------------------------------------------------------------------


class GatewayProcess:
    """`python -m gateway serve` as a real process, to be killed with SIGKILL."""

    def __init__(
        self,
        port: int,
        broker_url: str,
        contracts: Path,
        store_url: str,
        log: Path,
        log_level: str = "warning",
        options: Sequence[str] = (),
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--broker",
            broker_url,
            "--contracts",
            str(contracts),
            # Topics as `make_settings` lays them out (none unless it was asked for).
            "--topics",
            str(contracts.parent / "topics"),
            "--store",
            store_url,
            "--log-level",
            log_level,
            *options,
        ]
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, limit: float = 30, take_over: bool = True) -> None:
        """Start the process; return once `/readyz` says 200 (polled: a process start has
        no event to await). `take_over`: see `tests.support.take_over_vhost`."""
        if take_over:
            await take_over_vhost(self.args[self.args.index("--broker") + 1])
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            async with asyncio.timeout(limit):
                while True:
                    assert self.process.returncode is None, self.log.read_text()[-3000:]
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from gateway.worker import Worker

    broker_url, op, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    worker = Worker(broker_url)

    @worker.operation(op)
    async def generate(request, job):
        await job.progress({"done": 1, "total": 2, "message": f"{mode} pid {os.getpid()}"})
        if mode == "hang":
            await asyncio.Event().wait()  # killed while holding the request
        await job.progress({"done": 2, "total": 2})
        return {"title": request["title"], "sections": [mode]}

    worker.run()
    """
)


class WorkerProcess:
    """A `gateway.worker.Worker` in a process of its own: `hang` takes jobs and never
    finishes them; `finish` does them."""

    def __init__(self, directory: Path, broker_url: str, op: str, mode: str) -> None:
        script = directory / "fault_worker.py"
        script.write_text(WORKER_SCRIPT)
        self.log = directory / f"worker-{mode}.log"
        self.args = [sys.executable, str(script), broker_url, op, mode]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)


# -- a careful client -------------------------------------------------------------------


@dataclass
class KeyedTally:
    """What a careful client saw, and what the workers ran; `report` prints the figures."""

    name: str
    held: dict[str, str] = field(default_factory=dict)
    """Idempotency-Key -> the job id the client got for it (a 200 or 202)."""
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    timeouts: int = 0
    connection_errors: int = 0
    refusal_seconds: list[float] = field(default_factory=list)
    executed: Counter[str] = field(default_factory=Counter)
    """Job id -> how often a worker ran it."""
    succeeded: int = 0
    not_found: int = 0
    """Held ids the gateway answered 404 for: forgotten."""

    @property
    def lost(self) -> int:
        return len(self.held) - self.succeeded

    @property
    def executed_unheld(self) -> int:
        """Runs of work under an id no client holds."""
        held = set(self.held.values())
        return sum(n for job_id, n in self.executed.items() if job_id not in held)

    @property
    def executed_twice(self) -> int:
        """Extra runs of one held id (at-least-once: a worker can dedupe by message_id)."""
        return sum(n - 1 for n in self.executed.values() if n > 1)

    def report(self, extra: str = "") -> str:
        line = (
            f"[{self.name}] keys accepted {len(self.held)}, succeeded {self.succeeded}, "
            f"lost {self.lost}, executed under an id nobody holds {self.executed_unheld}, "
            f"404 after 202 {self.not_found}, 500s {self.statuses[500]}; attempts "
            f"{self.attempts} (503: {self.statuses[503]}, client timeouts {self.timeouts}, "
            f"connection errors {self.connection_errors}); executed again under the same id "
            f"{self.executed_twice}"
        )
        if extra:
            line += f"; {extra}"
        print("\n" + line, flush=True)
        return line


class Milestones:
    """A load generator's waits: `until` a condition over its tally holds, checked by
    `seen()` after every response (no polling)."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []

    async def until(self, condition: Callable[[], bool], limit: float = 60) -> None:
        """Wait (at most `limit` s) until `condition()` holds after some response."""
        if condition():
            return
        event = asyncio.Event()
        self._waiters.append((condition, event))
        async with asyncio.timeout(limit):
            await event.wait()

    def seen(self) -> None:
        for condition, event in list(self._waiters):
            if condition():
                event.set()
                self._waiters.remove((condition, event))


async def poll_until(condition: Callable[[], bool], limit: float = 30) -> None:
    """Poll in-process state that has no event of its own until `condition()` holds."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - a count or flag in the gateway
            await asyncio.sleep(0.01)


class CarefulLoad(Milestones):
    """Submitters that send every request with an Idempotency-Key and retry that key on
    timeouts, 503s, 500s and connection errors until they hold a job id, as the README
    tells a client to. Stopping lets each finish the key it has started."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        op: str,
        tally: KeyedTally,
        *,
        client_timeout: float = 3.0,
        pause: float = 0.1,
    ) -> None:
        self.http = http
        self.op = op
        self.tally = tally
        self.client_timeout = client_timeout
        self.pause = pause  # between retries (shorter than Retry-After: a stress)
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        super().__init__()

    def start(self, submitters: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._submit(n)) for n in range(submitters)]

    async def stop(self, limit: float = 120) -> None:
        self.stopping.set()
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*self._tasks)
        except TimeoutError:
            self.tally.report("STOPPED: a key never got its job id")
            raise

    async def _submit(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            await self.submit_one(f"{n}-{i}-{secrets.token_hex(4)}", {"a": n, "b": i})

    async def submit_one(self, key: str, body: dict[str, object]) -> str:
        """Submit under `key` until a job id comes back; that id."""
        tally = self.tally
        while True:
            tally.attempts += 1
            started = time.monotonic()
            try:
                r = await self.http.post(
                    f"/v1/ops/{self.op}",
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=self.client_timeout,
                )
            except httpx.TimeoutException:
                tally.timeouts += 1
            except httpx.TransportError:
                tally.connection_errors += 1
            else:
                tally.statuses[r.status_code] += 1
                if r.status_code in (200, 202):
                    job_id: str = r.json()["id"]
                    tally.held[key] = job_id
                    self.seen()
                    return job_id
                if r.status_code == 503:
                    assert_error_body(r, 503)
                    assert int(r.headers["retry-after"]) >= 1, r.headers
                    tally.refusal_seconds.append(time.monotonic() - started)
                elif r.status_code != 500:
                    raise AssertionError(f"unexpected {r.status_code}: {r.text[:300]}")
            self.seen()
            await asyncio.sleep(self.pause)


async def settle(http: httpx.AsyncClient, tally: KeyedTally, limit: float = 120) -> None:
    """Follow every held id to its end: count the succeeded and the forgotten (404)."""

    async def follow(job_id: str) -> str:
        async with asyncio.timeout(limit):
            while True:
                r = await http.get(f"/v1/jobs/{job_id}?wait=30")
                if r.status_code == 404:
                    return "forgotten"
                if r.status_code == 503:  # the store or broker still recovering
                    await asyncio.sleep(0.2)
                    continue
                assert r.status_code == 200, r.text
                if r.json()["status"] in TERMINAL:
                    return str(r.json()["status"])

    ends = await asyncio.gather(*(follow(i) for i in tally.held.values()))
    tally.succeeded = ends.count("succeeded")
    tally.not_found = ends.count("forgotten")


async def readyz_until(
    http: httpx.AsyncClient, status: int, limit: float = 30, problem: str = ""
) -> float:
    """Probe /readyz until it answers `status` (with `problem` in what it says); the
    seconds that took. (Polled: readiness is a question, and each probe waits for
    RabbitMQ's confirm or its absence.)"""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while True:
            try:
                r = await http.get("/readyz", timeout=10)
                if r.status_code == status and problem in r.text:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


# -- attacks: how the gateway holds up while one runs ---------------------------------------


@dataclass
class ReadyzProbe:
    """`/readyz`, asked over and over until stopped: the latency of each answer."""

    http: httpx.AsyncClient
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            r = await self.http.get("/readyz", timeout=60)
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(r.status_code)
            await asyncio.sleep(0.01)  # pacing, not waiting: a probe every 10 ms or so


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB (/proc: no procps needed)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0])
    return figures
