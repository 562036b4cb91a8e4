"""What it costs to reach a light job through a process that does not hold it.

With `gateway serve --workers N`, a light job lives in one process's memory; a request
for it landing on another process is forwarded over a UNIX socket (gateway/siblings.py).
This measures that hop: `GET /v1/jobs/{id}` of one finished light job, over one kept-alive
connection to the process that holds it and one to another, in alternating rounds; and
the CPU both processes spend per request each way.

    .venv/bin/python -m bench.forwarding                  # 4 rounds of 2,000 GETs each way
    .venv/bin/python -m bench.forwarding --rounds 6 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from bench.procs import PYTHON, ROOT, cpu_seconds, tree, wait_http_ok
from tests.support import RabbitNode, connection_per_process, free_port

GATEWAY = str(ROOT / ".venv" / "bin" / "gateway")
CONTRACTS = ROOT / "bench" / "contracts"
OP = "echo.light"


async def measure(url: str, supervisor: int, rounds: int, requests: int) -> None:
    async with AsyncExitStack() as stack:
        by_slot = await connection_per_process(stack, url, OP, 2)
        await measure_on(by_slot, supervisor, rounds, requests)


async def measure_on(
    by_slot: dict[str, httpx.AsyncClient], supervisor: int, rounds: int, requests: int
) -> None:
    r = await by_slot["0"].post(f"/v1/ops/{OP}?wait=5", json={"n": 2})
    location = r.headers["location"]
    assert r.json()["id"].endswith(".0")
    processes = [p.pid for p in tree(supervisor) if p.pid != supervisor]
    results: dict[str, list[tuple[float, float]]] = {"owner": [], "forwarded": []}
    for _ in range(rounds):
        for way, client in (("owner", by_slot["0"]), ("forwarded", by_slot["1"])):
            cpu_before = sum(cpu_seconds(p) for p in processes)
            started = time.perf_counter()
            for _ in range(requests):
                (await client.get(location)).raise_for_status()
            elapsed = time.perf_counter() - started
            cpu = sum(cpu_seconds(p) for p in processes) - cpu_before
            results[way].append((elapsed / requests * 1e3, cpu / requests * 1e3))
    print(f"GET {location}: {rounds} rounds of {requests:,} sequential requests each way")
    print("| way | latency, ms (median of rounds) | gateway CPU per request, ms |")
    print("| --- | --- | --- |")
    for way, figures in results.items():
        latency = statistics.median(f[0] for f in figures)
        cpu = statistics.median(f[1] for f in figures)
        print(f"| {way} | {latency:.3f} | {cpu:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-forwarding-") as work:
        node = RabbitNode(Path(work) / "rabbit")
        node.env["RABBITMQ_LOCAL_NODENAME"] = f"bench-{free_port()}"
        node.start()
        port = free_port()
        gateway = worker = None
        try:
            gateway = subprocess.Popen(
                [
                    *(GATEWAY, "serve", "--workers", "2", "--port", str(port)),
                    *("--broker", node.url, "--contracts", str(CONTRACTS)),
                    *("--store", f"sqlite:///{work}/store.sqlite3", "--log-level", "warning"),
                ],
                cwd=ROOT,
            )
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(url + "/readyz", 60)  # the gateway has declared the queue
            worker = subprocess.Popen(
                [PYTHON, "-m", "bench.echo_worker", node.url, "--passive", OP],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert worker.stdout is not None
            while worker.stdout.readline().strip() != "serving":
                pass
            asyncio.run(measure(url, gateway.pid, args.rounds, args.requests))
        finally:
            for proc in (gateway, worker):
                if proc is not None:
                    proc.terminate()
                    proc.wait(20)
            node.stop()


if __name__ == "__main__":
    main()
