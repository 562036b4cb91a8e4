"""Idle waiters: N connections held open on one gateway process, half SSE streams and
half long-polls (`GET /v1/jobs/<id>?wait=60&after=1`), all on one job no worker serves.

Measures the gateway's RSS per connection (RSS with them all held, minus before, over N)
and the fan-out latency: acting as a worker, it publishes one `progress` answer to
`gateway.answers` and times until every connection has received it.

    python -m bench.waiters http://127.0.0.1:8000 AMQP_URL --gateway-pid PID --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import resource
import time
from urllib.parse import urlsplit

import aio_pika
import psutil

from bench.http11 import Connection
from bench.procs import raise_nofile
from bench.stats import percentile, print_result

ANSWERS_QUEUE = "gateway.answers"
BATCH = 250  # connections opened at once: well under uvicorn's listen backlog
HOLD_SECONDS = 60  # the long-polls' wait; all N must be connected well before it ends


class Waiters:
    """N connections waiting on one job; each records when the progress event reached it."""

    def __init__(self, host: str, port: int, job_id: str) -> None:
        self.host, self.port, self.job_id = host, port, job_id
        self.received: list[float] = []
        self.failed = 0
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
        self._done(status == 200)

    async def _long_poll(self, connection: Connection, opened: asyncio.Event) -> None:
        reader = await connection.send("GET", f"/v1/jobs/{self.job_id}?wait={HOLD_SECONDS}&after=1")
        opened.set()
        status, headers = await connection.read_head(reader)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self._done(status == 200 and json.loads(body)["seq"] > 1)

    def _done(self, ok: bool) -> None:
        if ok:
            self.received.append(time.perf_counter())
        else:
            self.failed += 1

    async def _guarded(self, kind: str, connection: Connection, opened: asyncio.Event) -> None:
        try:
            await (self._sse if kind == "sse" else self._long_poll)(connection, opened)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.failed += 1
            opened.set()
        finally:
            connection.close()

    async def open(self, n: int) -> None:
        """Open n connections (SSE first: they never time out), BATCH at a time."""
        kinds = ["sse"] * (n // 2) + ["poll"] * (n - n // 2)
        for start in range(0, n, BATCH):
            opened = []
            for kind in kinds[start : start + BATCH]:
                connection = Connection(self.host, self.port)
                event = asyncio.Event()
                self.connections.append(connection)
                self.tasks.append(asyncio.create_task(self._guarded(kind, connection, event)))
                opened.append(event)
            await asyncio.gather(*(event.wait() for event in opened))

    async def finish(self, timeout: float) -> None:
        await asyncio.wait(self.tasks, timeout=timeout)
        for connection in self.connections:
            connection.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def waiting(base: Connection) -> int:
    """The gateway's own count of waiters. A fresh connection each time: the harness's
    keep-alive one may have been closed by the server while it sat idle."""
    base.close()
    text = (await base.request("GET", "/metrics")).body.decode()
    found = re.search(r"^gateway_waiters (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else -1


async def new_job(base: Connection, op: str) -> str:
    response = await base.request("POST", f"/v1/ops/{op}", b"{}")
    if response.status != 202:
        raise RuntimeError(f"submit answered {response.status}: {response.body[:200]!r}")
    job_id: str = json.loads(response.body)["id"]
    return job_id


async def wait_for_waiters(base: Connection, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = await waiting(base)
    while count < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        count = await waiting(base)
    return count


async def run(
    base_url: str, amqp_url: str, op: str, n: int, gateway_pid: int, warm: int
) -> dict[str, object]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    gateway = psutil.Process(gateway_pid)
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
        started = time.perf_counter()
        await channel.default_exchange.publish(message, routing_key=ANSWERS_QUEUE)
        return started

    # Warm-up: a few waiters through the whole cycle, so one-time costs (imports, first
    # allocations) are not charged to the measured connections.
    warm_job = await new_job(base, op)
    warmers = Waiters(host, port, warm_job)
    await warmers.open(warm)
    await wait_for_waiters(base, warm, 30)
    await publish_progress(warm_job)
    await warmers.finish(30)
    await wait_for_waiters(base, 0, 0)

    job_id = await new_job(base, op)
    await asyncio.sleep(1.0)
    rss_before = gateway.memory_info().rss
    cpu_before = gateway.cpu_times()
    opening = time.perf_counter()
    waiters = Waiters(host, port, job_id)
    await waiters.open(n)
    held = await wait_for_waiters(base, n, HOLD_SECONDS / 2)
    connect_seconds = time.perf_counter() - opening
    await asyncio.sleep(1.0)  # let the gateway settle (buffers, lazily created tasks)
    rss_after = gateway.memory_info().rss
    cpu_after = gateway.cpu_times()

    gc.disable()  # no collector pause inside the timed fan-out
    client_cpu0 = time.process_time()
    published = await publish_progress(job_id)
    await waiters.finish(30)
    client_cpu = time.process_time() - client_cpu0
    gc.enable()
    received = sorted(t - published for t in waiters.received)
    await amqp.close()
    base.close()
    return {
        "n": n,
        "held": held,
        "received": len(received),
        "failed": waiters.failed,
        "connect_seconds": connect_seconds,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_per_conn_kb": (rss_after - rss_before) / max(held, 1) / 1024,
        "gateway_cpu_connect_s": (cpu_after.user + cpu_after.system)
        - (cpu_before.user + cpu_before.system),
        "fanout_p50_ms": percentile(received, 0.5) * 1000,
        "fanout_p99_ms": percentile(received, 0.99) * 1000,
        "fanout_all_ms": received[-1] * 1000 if received else float("nan"),
        "client_fanout_cpu_s": client_cpu,
        "client_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("amqp_url")
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--op", default="idle")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=100)
    args = parser.parse_args()
    limit = raise_nofile()
    if limit < args.n + 100:
        raise SystemExit(f"open-file limit {limit} is too low for {args.n} connections")
    print_result(
        asyncio.run(run(args.url, args.amqp_url, args.op, args.n, args.gateway_pid, args.warm))
    )


if __name__ == "__main__":
    main()
