"""Example worker for `echo`: answers with the request (tests and benchmarks use it)."""

import os

from gateway.worker import Worker

worker = Worker(
    os.environ.get("GATEWAY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673/"), prefetch=64
)


@worker.operation("echo")
async def echo(request, job):
    return request


if __name__ == "__main__":
    worker.run()
