"""The raw AMQP RPC ceiling: a plain aio-pika client keeping C requests in flight against
the echo worker, no HTTP and no gateway.

transient: classic non-durable queue, transient messages, no confirms, an exclusive
           reply queue consumed without acks (RabbitMQ's RPC tutorial, at full speed);
durable:   quorum queue, persistent messages, publisher confirms, and a quorum reply
           queue whose answers are acked one by one (what the gateway's durable mode does).

    python -m bench.amqp_rpc URL --mode transient --concurrency 64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.stats import Window, print_result

QUEUES = {"transient": "bench.transient", "durable": "bench.durable"}
BODY = b'{"n": 1, "text": "hello, benchmark"}'
REQUEST_TIMEOUT = 10.0


async def run(
    url: str, mode: str, concurrency: int, duration: float, warmup: float
) -> dict[str, object]:
    durable = mode == "durable"
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=durable)
    await channel.set_qos(prefetch_count=max(256, concurrency * 2))
    if durable:
        # Quorum queues cannot be exclusive: a uniquely named one, deleted at the end.
        replies = await channel.declare_queue(
            f"bench.replies.{uuid.uuid4().hex}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
    else:
        replies = await channel.declare_queue("", exclusive=True, auto_delete=True)
    pending: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)
        if durable:
            await message.ack()

    await replies.consume(on_reply, no_ack=not durable)
    window = Window()
    stop = asyncio.Event()
    ids = itertools.count()
    loop = asyncio.get_running_loop()
    delivery_mode = (
        aio_pika.DeliveryMode.PERSISTENT if durable else aio_pika.DeliveryMode.NOT_PERSISTENT
    )

    async def caller() -> None:
        while not stop.is_set():
            correlation_id = str(next(ids))
            future: asyncio.Future[bytes] = loop.create_future()
            pending[correlation_id] = future
            started = time.perf_counter()
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        BODY,
                        content_type="application/json",
                        correlation_id=correlation_id,
                        reply_to=replies.name,
                        delivery_mode=delivery_mode,
                    ),
                    routing_key=QUEUES[mode],
                    timeout=REQUEST_TIMEOUT,
                )
                await asyncio.wait_for(future, REQUEST_TIMEOUT)
            except (TimeoutError, aio_pika.exceptions.AMQPError):
                pending.pop(correlation_id, None)
                window.failed()
                continue
            window.ok(time.perf_counter() - started)

    callers = [asyncio.create_task(caller()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    window.open()
    await asyncio.sleep(duration)
    window.close()
    stop.set()
    await asyncio.wait(callers, timeout=REQUEST_TIMEOUT + 1)
    if durable:
        await replies.delete(if_unused=False, if_empty=False)
    await connection.close()
    return window.summary(mode=mode, concurrency=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--mode", choices=sorted(QUEUES), default="transient")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    print_result(
        asyncio.run(run(args.url, args.mode, args.concurrency, args.duration, args.warmup))
    )


if __name__ == "__main__":
    main()
