"""Example worker for `report.generate`: a long job that reports progress per section.

`long_running=True`: the worker says `started` and acks at once, then heartbeats keep its
lease; if it dies the gateway fails the job with `worker_lost` (see docs/workers.md)."""

import asyncio
import os

from gateway.worker import Worker

worker = Worker(os.environ.get("GATEWAY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673/"))


@worker.operation("report.generate", long_running=True)
async def generate(request, job):
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
