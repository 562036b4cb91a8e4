"""The benchmark's echo worker: a plain aio-pika RPC server, no gateway code.

It answers every request with its own body, to `reply_to`, with the `correlation_id`
copied, then acks. The same process serves the raw-AMQP queues (`bench.*`, declared
here) and the gateway's operation queues (declared by the gateway, so only checked
passively here): both sides of each comparison pay for the very same worker.

    python -m bench.echo_worker URL --declare bench.transient:classic \
        --declare bench.durable:quorum --passive echo --passive echo.light
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="AMQP URL")
    parser.add_argument(
        "--declare",
        action="append",
        default=[],
        metavar="QUEUE:KIND",
        help="declare and consume QUEUE; KIND is classic (non-durable) or quorum",
    )
    parser.add_argument("--passive", action="append", default=[], help="consume an existing queue")
    parser.add_argument("--prefetch", type=int, default=256)
    return parser.parse_args()


def responder(
    exchange: AbstractExchange,
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def on_request(message: AbstractIncomingMessage) -> None:
        if message.reply_to:
            # No publisher confirm on the answer: the worker should cost as little as
            # possible, and it costs the same in every scenario. The delivery mode is
            # copied, so durable requests get persistent answers.
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                    delivery_mode=message.delivery_mode,
                ),
                routing_key=message.reply_to,
            )
        await message.ack()

    return on_request


async def serve(args: argparse.Namespace) -> None:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=args.prefetch)
    on_request = responder(channel.default_exchange)
    for spec in args.declare:
        name, _, kind = spec.partition(":")
        if kind == "quorum":
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
        else:
            queue = await channel.declare_queue(name, durable=False)
        await queue.consume(on_request)
    for name in args.passive:
        queue = await channel.declare_queue(name, passive=True)
        await queue.consume(on_request)
    print("serving", flush=True)  # the harness waits for this line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await connection.close()


if __name__ == "__main__":
    asyncio.run(serve(parse_args()))
