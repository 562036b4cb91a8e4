"""The test operation `conform.steps` served with the Python kit (`gateway.worker`), on the
long-job pattern, for tests/test_conform.py: `gateway conform --claims long` must pass it.

    GATEWAY_BROKER_URL=amqp://... python tests/conform/worker.py

It checks each request against the contract (an off-contract one fails `invalid_request`),
works `steps` steps of `seconds` each with a progress answer after each, and fails with
the code `fail` when asked to.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
from jsonschema import Draft7Validator

from gateway.types import JSON
from gateway.worker import JobContext, JobFailed, Worker

CONTRACT = orjson.loads((Path(__file__).parent / "conform.steps.json").read_bytes())
REQUEST = Draft7Validator({**CONTRACT, "$ref": "#/definitions/request"})

worker = Worker(os.environ["GATEWAY_BROKER_URL"])


@worker.operation("conform.steps", long_running=True)
async def steps(request: JSON, job: JobContext) -> JSON:
    problem = next(iter(REQUEST.iter_errors(request)), None)
    if problem is not None:
        raise JobFailed("invalid_request", problem.message)
    total = request["steps"]
    for done in range(1, total + 1):
        await asyncio.sleep(request.get("seconds", 0))
        await job.progress({"done": done, "total": total})
    if "fail" in request:
        raise JobFailed(request["fail"], "failed, as the request asked")
    return {"steps": total}


if __name__ == "__main__":
    worker.run()
