"""The peer many users would otherwise pick: Celery workers behind Flower's HTTP API, on
the same RabbitMQ node. Starts a Celery worker and Flower; the load comes from
`bench.http_async --mode flower`."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.procs import PYTHON, Proc, Procs, wait_http_ok

TASK = "bench.echo"
# Celery's own default pool size is the number of CPUs; pin it so runs compare.
WORKER_CONCURRENCY = 2


@dataclass
class CeleryPeer:
    worker: Proc
    flower: Proc
    url: str

    def stop(self, procs: Procs) -> None:
        procs.stop(self.flower)
        procs.stop(self.worker)


def start(procs: Procs, broker_url: str, results_dir: Path, port: int) -> CeleryPeer:
    results_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "BENCH_CELERY_BROKER": broker_url,
        "BENCH_CELERY_RESULTS": str(results_dir),
        # Flower 2.x refuses its HTTP API without auth unless told otherwise.
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    celery = [PYTHON, "-m", "celery", "-A", "bench.celery_app"]
    worker = procs.start(
        "celery-worker",
        [
            *celery,
            "worker",
            "--pool=prefork",
            f"--concurrency={WORKER_CONCURRENCY}",
            "--loglevel=warning",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
    )
    flower = procs.start(
        "flower",
        [*celery, "flower", "--address=127.0.0.1", f"--port={port}", "--logging=warning"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(url + "/healthcheck", 60, flower)
    # Flower's healthcheck does not need the worker: one task through, end to end.
    round_trip(url, timeout=60)
    return CeleryPeer(worker, flower, url)


def round_trip(url: str, timeout: float) -> None:
    """Run one echo task through Flower; raise unless it succeeds within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{url}/api/task/async-apply/{TASK}",
            data=json.dumps({"args": [{"ping": 1}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                task_id = json.loads(response.read())["task-id"]
            with urllib.request.urlopen(
                f"{url}/api/task/result/{task_id}?timeout=10", timeout=15
            ) as response:
                if json.loads(response.read()).get("state") == "SUCCESS":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no Celery task went through Flower within {timeout:g} s")
