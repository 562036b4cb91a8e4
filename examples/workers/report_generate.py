"""Example worker for `report.generate`: a long job that reports progress per section.

`long_running=True`: the worker says `started` and acks at once, then heartbeats keep its
lease; if it dies the gateway fails the job with `worker_lost` (see docs/workers.md).
It checks each request against the contract first: the gateway sends only valid ones, but
anything put straight into the queue fails `invalid_request` instead of half-running
(`gateway conform --claims long` asks exactly that, docs/conform.md)."""

import asyncio
import json
import os
from pathlib import Path

from jsonschema import Draft7Validator

from gateway.worker import JobFailed, Worker

CONTRACT = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/ops/report.generate.json").read_text()
)
REQUEST = Draft7Validator({"$ref": "#/definitions/request", **CONTRACT})

worker = Worker(os.environ.get("GATEWAY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673/"))


@worker.operation("report.generate", long_running=True)
async def generate(request, job):
    problem = next(REQUEST.iter_errors(request), None)
    if problem is not None:
        raise JobFailed("invalid_request", problem.message)
    total = request.get("sections", 3)
    pause = request.get("seconds_per_section", 0.5)
    sections = []
    for n in range(1, total + 1):
        await asyncio.sleep(pause)
        sections.append(f"{request['title']}: section {n} of {total}")
        await job.progress({"done": n, "total": total, "message": f"section {n} written"})
    return {"title": request["title"], "sections": sections}


if __name__ == "__main__":
    worker.run()
