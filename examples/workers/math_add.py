"""Example worker for `math.add`: a quick RPC, served with the gateway's Python helper."""

import os

from gateway.worker import Worker

worker = Worker(os.environ.get("GATEWAY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5673/"))


@worker.operation("math.add")
async def add(request, job):
    return {"sum": request["a"] + request["b"]}


if __name__ == "__main__":
    worker.run()
