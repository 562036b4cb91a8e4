"""Asynchronous jobs over HTTP: C clients each submit a job, then follow it to its result.

poll:   POST /v1/ops/<op> (202), then GET /v1/jobs/<id>?wait=30 (long-poll)
sse:    POST /v1/ops/<op> (202), then GET /v1/jobs/<id>/events as text/event-stream,
        read until the `result` event
flower: Celery through Flower's HTTP API: POST /api/task/async-apply/<task>, then
        GET /api/task/result/<id>?timeout=10

Latency is end to end: from sending the submit to holding the result. Each client keeps
one keep-alive connection and uses it for both requests, as a browser or script would.

    python -m bench.http_async http://127.0.0.1:8000 --mode poll --op echo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

from bench.http11 import Connection, HttpError
from bench.stats import Window, print_result

BODY = {"n": 1, "text": "hello, benchmark"}
REQUEST_TIMEOUT = 35.0


async def gateway_job(connection: Connection, op: str, follow: str) -> bool:
    submitted = await connection.request("POST", f"/v1/ops/{op}", json.dumps(BODY).encode())
    if submitted.status != 202:
        return False
    job_id = json.loads(submitted.body)["id"]
    if follow == "poll":
        answer = await connection.request("GET", f"/v1/jobs/{job_id}?wait=30")
        return answer.status == 200 and json.loads(answer.body)["status"] == "succeeded"
    status = await connection.stream_until(
        f"/v1/jobs/{job_id}/events", b"event: result", {"Accept": "text/event-stream"}
    )
    return status == 200


async def flower_task(connection: Connection, task: str) -> bool:
    body = json.dumps({"args": [BODY]}).encode()
    submitted = await connection.request("POST", f"/api/task/async-apply/{task}", body)
    if submitted.status != 200:
        return False
    task_id = json.loads(submitted.body)["task-id"]
    answer = await connection.request("GET", f"/api/task/result/{task_id}?timeout=10")
    return answer.status == 200 and json.loads(answer.body).get("state") == "SUCCESS"


async def run(
    base_url: str, mode: str, target: str, concurrency: int, duration: float, warmup: float
) -> dict[str, object]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    window = Window()
    stop = asyncio.Event()

    async def client() -> None:
        connection = Connection(host, port)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    if mode == "flower":
                        ok = await flower_task(connection, target)
                    else:
                        ok = await gateway_job(connection, target, mode)
            except (TimeoutError, OSError, HttpError, asyncio.IncompleteReadError, KeyError):
                connection.close()
                ok = False
            if ok:
                window.ok(time.perf_counter() - started)
            else:
                window.failed()
                await asyncio.sleep(0.05)  # no busy loop against a refusing server
        connection.close()

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    window.open()
    await asyncio.sleep(duration)
    window.close()
    stop.set()
    await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
    return window.summary(mode=mode, concurrency=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="base URL of the gateway (or of Flower)")
    parser.add_argument("--mode", choices=["poll", "sse", "flower"], default="poll")
    parser.add_argument("--target", default="echo", help="operation (or Celery task) name")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    print_result(
        asyncio.run(
            run(args.url, args.mode, args.target, args.concurrency, args.duration, args.warmup)
        )
    )


if __name__ == "__main__":
    main()
