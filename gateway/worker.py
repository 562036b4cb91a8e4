"""Serve an operation from Python in a few lines, speaking only the pinned wire protocol.

    from gateway.worker import Worker, JobFailed

    worker = Worker("amqp://guest:guest@127.0.0.1:5673/")

    @worker.operation("math.add")
    async def add(request, job):
        return {"sum": request["a"] + request["b"]}

    worker.run()

A handler gets the request (parsed JSON) and a `JobContext`; it returns the result, or
raises `JobFailed(code, message)` for an error answer. `await job.progress({...})` sends a
progress event. Any other exception becomes an error answer with code `worker_error`, so a
bug fails only its own job. The request is acked after the answer is confirmed by
RabbitMQ, so a worker killed mid-job leaves the request to be redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelClosed
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from gateway.types import JSON, JSONObject

__all__ = ["JobContext", "JobFailed", "Worker"]

log = logging.getLogger("gateway.worker")

Handler = Callable[[JSON, "JobContext"], Awaitable[JSON] | JSON]


class JobFailed(Exception):
    """Raise from a handler to fail the job with this code and message."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> JSONObject:
        error: JSONObject = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


@dataclass
class JobContext:
    """What a handler knows about its job, and how it talks back."""

    id: str
    op: str
    headers: JSONObject
    _answer: Callable[[str, bytes], Awaitable[None]] = field(repr=False)

    async def progress(self, data: JSON) -> None:
        """Send a progress event (it must match the contract's `progress` schema)."""
        await self._answer("progress", orjson.dumps(data))

    async def started(self) -> None:
        """Mark the job running (optional; the first progress event does it too)."""
        await self._answer("started", b"null")


@dataclass
class _Operation:
    op: str
    handler: Handler
    prefetch: int


class Worker:
    def __init__(self, broker_url: str, *, prefetch: int = 8) -> None:
        self.broker_url = broker_url
        self.prefetch = prefetch
        self._operations: list[_Operation] = []
        self._connection: AbstractRobustConnection | None = None

    def operation(self, op: str, *, prefetch: int | None = None) -> Callable[[Handler], Handler]:
        """Register `handler` for operation `op`; up to `prefetch` jobs run at once."""

        def register(handler: Handler) -> Handler:
            self._operations.append(_Operation(op, handler, prefetch or self.prefetch))
            return handler

        return register

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Consume until cancelled. Waits for the gateway to declare the queues."""
        self._connection = await aio_pika.connect_robust(self.broker_url, reconnect_interval=1)
        try:
            for operation in self._operations:
                await self._consume(operation)
            log.info("serving %s", ", ".join(o.op for o in self._operations))
            if ready is not None:
                ready.set()
            await asyncio.Future()  # until cancelled
        finally:
            await self._connection.close()

    async def _consume(self, operation: _Operation) -> None:
        assert self._connection is not None
        # The gateway owns the topology: declare passively, and wait until it exists.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(ChannelClosed),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                channel = await self._connection.channel(publisher_confirms=True)
                try:
                    queue = await channel.declare_queue(operation.op, passive=True)
                except ChannelClosed:
                    log.info(
                        "queue %s not declared yet (is the gateway up?); retrying", operation.op
                    )
                    raise
        await channel.set_qos(prefetch_count=operation.prefetch)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(channel, operation, message)

        await queue.consume(on_message)

    async def _handle(
        self, channel: AbstractChannel, operation: _Operation, message: AbstractIncomingMessage
    ) -> None:
        reply_to, job_id = message.reply_to, message.correlation_id or ""

        async def answer(kind: str, body: bytes) -> None:
            if not reply_to:
                return
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body, content_type="application/json", correlation_id=job_id, type=kind
                ),
                routing_key=reply_to,
            )

        job = JobContext(job_id, operation.op, dict(message.headers or {}), answer)
        try:
            request = orjson.loads(message.body)
            result = operation.handler(request, job)
            if inspect.isawaitable(result):
                result = await result
            await answer("result", orjson.dumps(result))
        except JobFailed as failure:
            await answer("error", orjson.dumps(failure.body()))
        except orjson.JSONDecodeError:
            await answer(
                "error",
                orjson.dumps(JobFailed("invalid_request", "the request is not JSON").body()),
            )
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, operation.op)
            await answer(
                "error",
                orjson.dumps(JobFailed("worker_error", f"{type(exc).__name__}: {exc}").body()),
            )
        # Only now, with the answer confirmed by RabbitMQ, is the request done with.
        await message.ack()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM."""
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

        async def main() -> None:
            task = asyncio.create_task(self.serve())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(main())
