"""Idle waiters: N connections held open on a gateway (one process, or a `--workers`
supervisor and its children), half SSE streams and half long-polls
(`GET /v1/jobs/<id>?wait=...&after=1`), all on one job no worker serves.

Measures the gateway's RSS per connection (RSS of all its processes with them all held,
minus before, over N) and the fan-out: acting as a worker, it publishes one `progress`
answer to `gateway.answers` and times until every connection has received it.

The connections are held by K client processes (N/K each, each from its own loopback
address, 127.0.0.2, 127.0.0.3, ...): one asyncio process reading 10,000 sockets was
itself the bottleneck of the fan-out, and one process may hold at most 20,000 sockets
here (the open-file hard limit) and one source address ~28,000 (the ephemeral ports).
Each client stamps every arrival with CLOCK_MONOTONIC, which is one clock for all
processes on Linux, and reports them to this coordinator, which stamped the publish.

    python -m bench.waiters http://127.0.0.1:8000 AMQP_URL --gateway-pid PID --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import math
import multiprocessing
import resource
import time
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import psutil

from bench.http11 import Connection
from bench.procs import cpu_seconds, raise_nofile, rss_bytes, tree
from bench.stats import percentile, print_result

ANSWERS_QUEUE = "gateway.answers"
# Connections being opened at once, all clients together: well under the listen
# backlog, and few enough that the gateway's store reads for them do not queue for
# seconds (it answers 503 store_unavailable when they do).
OPENING = 500
# The long-polls' wait: all N must be connected, and the gateway settled, before it runs
# out; the harness starts the gateway with a --max-wait at least this long.
HOLD_SECONDS = 300
PER_CLIENT = 12_500  # connections per client process, by default: under the fd limit
FIRST_SOURCE = "127.0.0.2"
QUIET_PCT = 20.0  # the gateway has settled when its processes use less than this


def now() -> float:
    """CLOCK_MONOTONIC: system-wide on Linux, so stamps compare across processes."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Waiters:
    """Connections waiting on one job; each records when the progress event reached it."""

    def __init__(self, host: str, port: int, job_id: str, source: str | None = None) -> None:
        self.host, self.port, self.job_id, self.source = host, port, job_id, source
        self.received: list[float] = []
        self.ports: list[int] = []  # the local port of each of `received`
        self.failed = 0
        self.reasons: Counter[str] = Counter()  # why connections failed: status or error
        self.tasks: list[asyncio.Task[None]] = []
        self.connections: list[Connection] = []

    async def _sse(self, connection: Connection, opened: asyncio.Event) -> None:
        status = await connection.stream_until(
            f"/v1/jobs/{self.job_id}/events?after=1",
            b"event: progress",
            {"Accept": "text/event-stream"},
            on_open=opened,
            drain=False,  # the job goes on: the stream would not end
        )
        self._done(connection, status == 200, f"sse {status}")

    async def _long_poll(self, connection: Connection, opened: asyncio.Event) -> None:
        reader = await connection.send("GET", f"/v1/jobs/{self.job_id}?wait={HOLD_SECONDS}&after=1")
        opened.set()
        status, headers = await connection.read_head(reader)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if status != 200:  # the gateway's error code says why (a cap, a stall, ...)
            code = json.loads(body).get("error", {}).get("code", "") if body else ""
            self._done(connection, False, f"poll {status} {code}".strip())
            return
        self._done(connection, json.loads(body)["seq"] > 1, "poll 200 without the event")

    def _done(self, connection: Connection, ok: bool, what: str) -> None:
        if ok:
            self.received.append(now())
            self.ports.append(connection.local_port)
        else:
            self.failed += 1
            self.reasons[what] += 1

    async def _guarded(self, kind: str, connection: Connection, opened: asyncio.Event) -> None:
        try:
            await (self._sse if kind == "sse" else self._long_poll)(connection, opened)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.failed += 1
            self.reasons[f"{kind} {type(exc).__name__}"] += 1
            opened.set()
        finally:
            connection.close()

    async def open(self, n: int, batch: int = OPENING) -> None:
        """Open n connections, batch at a time, SSE and long-poll in turn: a batch is
        done when its streams have their response heads, so the clients go at the pace
        the gateway accepts (a flood would overrun the listen backlog: SYNs dropped and
        retried a second or more later)."""
        kinds = ["sse", "poll"] * (n // 2) + ["sse"] * (n % 2)
        for start in range(0, n, batch):
            opened = []
            for kind in kinds[start : start + batch]:
                connection = Connection(self.host, self.port, self.source)
                event = asyncio.Event()
                self.connections.append(connection)
                self.tasks.append(asyncio.create_task(self._guarded(kind, connection, event)))
                opened.append(event)
            await asyncio.gather(*(event.wait() for event in opened))

    async def finish(self, timeout: float, stop: asyncio.Event | None = None) -> None:
        """Wait until every connection has its answer (or timeout, or `stop`), then close."""
        if self.tasks:
            waits: list[asyncio.Future[Any]] = [asyncio.gather(*self.tasks)]
            if stop is not None:
                waits.append(asyncio.ensure_future(stop.wait()))
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
        for connection in self.connections:
            connection.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- a client process ------------------------------------------------------------------


def client_process(
    pipe: Pipe, host: str, port: int, job_id: str, n: int, source: str, batch: int
) -> None:
    """Hold n waiters from `source`; report when they are open, then every arrival."""
    raise_nofile()
    asyncio.run(_client(pipe, host, port, job_id, n, source, batch))


async def _client(
    pipe: Pipe, host: str, port: int, job_id: str, n: int, source: str, batch: int
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)  # the coordinator gave up waiting
    waiters = Waiters(host, port, job_id, source)
    started = now()
    await waiters.open(n, batch)
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector pause inside the timed fan-out
    pipe.send(
        (
            "ready",
            {
                "open_seconds": now() - started,
                "failed": waiters.failed,
                "reasons": dict(waiters.reasons),
            },
        )
    )
    cpu0 = time.process_time()
    await waiters.finish(HOLD_SECONDS, stop)
    loop.remove_reader(pipe.fileno())
    pipe.send(
        (
            "done",
            {
                "received": waiters.received,
                "ports": waiters.ports,
                "source": source,
                "failed": waiters.failed,
                "reasons": dict(waiters.reasons),
                "cpu_s": time.process_time() - cpu0,
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
        )
    )


# -- the coordinator -------------------------------------------------------------------


def open_files(pid: int) -> dict[int, int]:
    """Open files of each of the gateway's processes: accepted connections show up here."""
    found = {}
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            found[process.pid] = process.num_fds()
    return found


def sockets(pid: int) -> int:
    return sum(open_files(pid).values())


def holders(pid: int, port: int) -> dict[tuple[str, int], int]:
    """Which of the gateway's processes holds each client connection: (client address,
    client port) -> pid, from the kernel's socket tables."""
    found: dict[tuple[str, int], int] = {}
    for process in tree(pid):
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp4"):
                if conn.raddr and conn.laddr.port == port:
                    found[(conn.raddr.ip, conn.raddr.port)] = process.pid
    return found


async def settle(pid: int, timeout: float) -> None:
    """Until the gateway's processes are near idle: done accepting and registering."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before, t0 = cpu_seconds(pid, True), time.monotonic()
        await asyncio.sleep(0.5)
        pct = 100 * (cpu_seconds(pid, True) - before) / (time.monotonic() - t0)
        if pct < QUIET_PCT:
            return


async def new_job(base: Connection, op: str) -> str:
    response = await base.request("POST", f"/v1/ops/{op}", b"{}")
    if response.status != 202:
        raise RuntimeError(f"submit answered {response.status}: {response.body[:200]!r}")
    job_id: str = json.loads(response.body)["id"]
    return job_id


def sources(k: int) -> list[str]:
    first = ipaddress.IPv4Address(FIRST_SOURCE)
    return [str(first + i) for i in range(k)]


async def _recv(pipe: Pipe, timeout: float) -> tuple[str, dict[str, Any]]:
    """The next message from a client process, without blocking the event loop."""
    if not await asyncio.to_thread(pipe.poll, timeout):
        raise TimeoutError("a waiter client did not report in time")
    message: tuple[str, dict[str, Any]] = pipe.recv()
    return message


async def run(
    base_url: str,
    amqp_url: str,
    op: str,
    n: int,
    gateway_pid: int,
    warm: int,
    clients: int,
) -> dict[str, object]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    base = Connection(host, port)
    amqp = await aio_pika.connect(amqp_url)
    channel = await amqp.channel()

    async def publish_progress(job_id: str) -> float:
        message = aio_pika.Message(
            b"{}",
            content_type="application/json",
            correlation_id=job_id,
            type="progress",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        started = now()
        await channel.default_exchange.publish(message, routing_key=ANSWERS_QUEUE)
        return started

    # Warm-up: a few waiters through the whole cycle, so one-time costs (imports, first
    # allocations) are not charged to the measured connections; from several addresses,
    # so that every gateway process gets some.
    warm_job = await new_job(base, op)
    warmers = [Waiters(host, port, warm_job, source) for source in sources(4)]
    for group in warmers:
        await group.open(max(1, warm // len(warmers)))
    await settle(gateway_pid, 30)
    await publish_progress(warm_job)
    for group in warmers:
        await group.finish(30)
    base.close()

    job_id = await new_job(base, op)
    base.close()  # not a waiter: its socket is not counted as one
    await asyncio.sleep(1.0)
    await settle(gateway_pid, 30)
    rss_before = rss_bytes(gateway_pid, True)
    files_before = open_files(gateway_pid)
    fds_before = sum(files_before.values())
    cpu_before = cpu_seconds(gateway_pid, True)
    opening = now()
    context = multiprocessing.get_context("spawn")
    pipes: list[Pipe] = []
    procs = []
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    for share, source in zip(shares, sources(clients), strict=True):
        mine, theirs = context.Pipe()
        proc = context.Process(
            target=client_process,
            args=(theirs, host, port, job_id, share, source, max(25, OPENING // clients)),
            daemon=True,
        )
        proc.start()
        theirs.close()
        pipes.append(mine)
        procs.append(proc)
    try:
        ready = [(await _recv(pipe, HOLD_SECONDS / 3))[1] for pipe in pipes]
        connect_seconds = now() - opening
        for _ in range(150):  # up to 30 s for the gateway to accept the last of them
            if sockets(gateway_pid) - fds_before >= n:
                break
            await asyncio.sleep(0.2)
        files = open_files(gateway_pid)
        held = sum(files.values()) - fds_before
        # How the kernel spread them over the processes (the supervisor holds none).
        spread = sorted(
            (count - files_before.get(pid, 0) for pid, count in files.items()), reverse=True
        )
        await asyncio.sleep(1.0)  # let the gateway settle (buffers, lazily created tasks)
        await settle(gateway_pid, 30)
        rss_after = rss_bytes(gateway_pid, True)
        cpu_after = cpu_seconds(gateway_pid, True)
        held_by = holders(gateway_pid, port)
        processes = len(tree(gateway_pid))

        gc.disable()
        published = await publish_progress(job_id)
        reports = []
        for pipe in pipes:
            try:
                reports.append((await _recv(pipe, 30))[1])
            except TimeoutError:
                pipe.send("stop")
                reports.append((await _recv(pipe, 30))[1])
        gc.enable()
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    await amqp.close()

    received = sorted(t - published for r in reports for t in r["received"])
    last_per_client = [max(r["received"], default=math.nan) - published for r in reports]
    # Per gateway process: how many it held, its first and its last arrival.
    by_process: dict[int, list[float]] = {}
    for r in reports:
        for t, client_port in zip(r["received"], r["ports"], strict=True):
            holder = held_by.get((r["source"], client_port), 0)
            by_process.setdefault(holder, []).append(t - published)
    per_process = sorted([len(ts), min(ts) * 1000, max(ts) * 1000] for ts in by_process.values())
    reasons: Counter[str] = Counter()
    for r in reports:  # a client's final count includes those that failed while opening
        reasons.update(r["reasons"])
    return {
        "n": n,
        "held": held,
        "received": len(received),
        "failed": sum(r["failed"] for r in reports),
        "failed_while_opening": sum(r["failed"] for r in ready),
        "failures": dict(reasons),
        "clients": clients,
        "gateway_processes": processes,
        "held_per_process": [c for c in spread if c > 0],
        "fanout_per_process": sorted(per_process, key=lambda x: x[1]),
        "connect_seconds": connect_seconds,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_per_conn_kb": (rss_after - rss_before) / max(held, 1) / 1024,
        "gateway_cpu_connect_s": cpu_after - cpu_before,
        "fanout_first_ms": received[0] * 1000 if received else float("nan"),
        "fanout_p50_ms": percentile(received, 0.5) * 1000,
        "fanout_p99_ms": percentile(received, 0.99) * 1000,
        "fanout_all_ms": received[-1] * 1000 if received else float("nan"),
        "fanout_last_per_client_ms": [t * 1000 for t in last_per_client],
        "client_fanout_cpu_s": sum(r["cpu_s"] for r in reports),
        "client_max_rss_mb": max(r["max_rss_mb"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("amqp_url")
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--op", default="idle")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help=f"client processes (default: at least 2, at most {PER_CLIENT:,} connections each)",
    )
    args = parser.parse_args()
    clients = args.clients or max(2, math.ceil(args.n / PER_CLIENT))
    if math.ceil(args.n / clients) + 100 > raise_nofile():
        raise SystemExit(f"open-file limit too low for {args.n} connections over {clients}")
    print_result(
        asyncio.run(
            run(args.url, args.amqp_url, args.op, args.n, args.gateway_pid, args.warm, clients)
        )
    )


if __name__ == "__main__":
    main()
