"""The console tests' worker: serves the test contracts (tests/console/*.json but
console.idle, which nobody serves) with the Python worker kit, answering each request
with `{"received": request}` after `steps` progress events `step_seconds` apart."""

import asyncio
import os

from gateway.worker import JobContext, Worker

worker = Worker(os.environ["GATEWAY_BROKER_URL"])


async def answer(request: dict, job: JobContext) -> dict:
    steps = request.get("steps", 0) if isinstance(request, dict) else 0
    for done in range(1, steps + 1):
        await asyncio.sleep(request.get("step_seconds", 0))
        await job.progress({"done": done, "total": steps})
    return {"received": request}


worker.operation("console.kitchen", long_running=True)(answer)
worker.operation("console.shapes")(answer)
worker.operation("console.either")(answer)

if __name__ == "__main__":
    worker.run()
