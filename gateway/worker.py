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
bug fails only its own job.

Two ways to hold a request (see docs/workers.md):
- default: the request is acked after the answer is confirmed, so a worker killed mid-job
  leaves it to be redelivered to another worker;
- `long_running=True` (hours or days): the worker says `started`, acks at once (RabbitMQ's
  consumer timeout never fires), then sends heartbeats while the handler runs; if it dies,
  the gateway fails the job with `worker_lost` once the lease runs out.
While a handler runs, heartbeats go out every third of the job's lease, a cancel notice
from the gateway cancels the handler, and the job's deadline bounds it.

Every answer carries the AMQP `user_id` of the worker's broker user (RabbitMQ checks it),
so a gateway run with `--worker-users` knows it comes from a worker of that operation.
`Worker(url, gateway_user="gateway")` also takes only requests the gateway's broker user
published: anything else put straight into the operation's queue is rejected unrun.
The worker declares nothing it does not own (the operation queues and the cancel exchange
are the gateway's; it waits for them), so a least-privilege broker user is enough
(deploy/rabbitmq/setup.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
)
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from gateway.trace_context import TraceContext, otel_context
from gateway.trust import broker_user
from gateway.types import JSON, JSONObject
from gateway.wire import (
    CANCEL_EXCHANGE,
    HEADER_DEADLINE,
    HEADER_LEASE_SECONDS,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    AnswerType,
)

try:  # optional: the worker's spans, when the process has set OpenTelemetry up
    from opentelemetry import trace as _otel
except ImportError:  # pragma: no cover - the light install
    _otel = None  # type: ignore[assignment]

__all__ = ["JobContext", "JobFailed", "Worker"]

log = logging.getLogger("gateway.worker")

Handler = Callable[[JSON, "JobContext"], Awaitable[JSON] | JSON]
DEFAULT_LEASE_SECONDS = 120.0
REMEMBERED_CANCELS = 10_000
RECONNECT_SECONDS = 1.0


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
    _answer: Callable[[AnswerType, bytes], Awaitable[None]] = field(repr=False)
    trace: TraceContext | None = None
    """This run's place in the request's trace: its trace id, this worker's span id. Every
    answer carries it as `traceparent` (None: the request came without a valid one)."""

    @property
    def trace_id(self) -> str | None:
        """The trace this job belongs to, for your logs (as the kit's own lines show it)."""
        return None if self.trace is None else self.trace.trace_id

    @property
    def deadline(self) -> float | None:
        """When the job expires (epoch seconds), if it has a deadline."""
        raw = self.headers.get(HEADER_DEADLINE)
        return raw / 1000 if isinstance(raw, int | float) else None

    @property
    def lease_seconds(self) -> float:
        raw = self.headers.get(HEADER_LEASE_SECONDS)
        return float(raw) if isinstance(raw, int | float) and raw > 0 else DEFAULT_LEASE_SECONDS

    async def progress(self, data: JSON) -> None:
        """Send a progress event (it must match the contract's `progress` schema)."""
        await self._answer(AnswerType.PROGRESS, orjson.dumps(data))

    async def started(self) -> None:
        """Mark the job running (optional; the first progress event does it too)."""
        await self._answer(AnswerType.STARTED, b"null")

    async def heartbeat(self) -> None:
        """Prove the worker is alive (sent for you while a handler runs)."""
        await self._answer(AnswerType.HEARTBEAT, b"null")


@dataclass
class _Operation:
    op: str
    handler: Handler
    prefetch: int
    long_running: bool


class Worker:
    def __init__(
        self,
        broker_url: str,
        *,
        prefetch: int = 8,
        gateway_user: str | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """`tracer_provider`: an OpenTelemetry tracer provider for the worker's spans (by
        default the process's global one; none set up, no spans: see `_run_span`)."""
        self.broker_url = broker_url
        self.tracer_provider = tracer_provider
        self.prefetch = prefetch
        # The broker user this worker logs in as: RabbitMQ refuses any other as user_id.
        self.user = broker_user(broker_url)
        # Take only requests whose (RabbitMQ-checked) user_id is the gateway's.
        self.gateway_user = gateway_user
        self._operations: list[_Operation] = []
        self._connection: AbstractConnection | None = None
        self._running: dict[str, asyncio.Task[JSON]] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    def operation(
        self, op: str, *, prefetch: int | None = None, long_running: bool = False
    ) -> Callable[[Handler], Handler]:
        """Register a handler for operation `op`; up to `prefetch` jobs run at once."""

        def register(handler: Handler) -> Handler:
            self._operations.append(
                _Operation(op, handler, prefetch or self.prefetch, long_running)
            )
            return handler

        return register

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Consume until cancelled. Waits for the gateway to declare the queues.

        When the connection is lost, everything is set up again on a new one. (Not
        aio-pika's robust restore: after a broker restart it sometimes came back with its
        consumers missing, leaving a connected worker that never got a job.)"""
        while True:
            try:
                self._connection = await aio_pika.connect(self.broker_url)
            except (ConnectionError, AMQPConnectionError) as exc:
                log.warning("RabbitMQ unreachable (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            lost = asyncio.Event()
            self._connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
            try:
                await self._listen_for_cancels()
                for operation in self._operations:
                    await self._consume(operation)
                # A line the test harness and people watch for.
                log.info("serving %s", ", ".join(o.op for o in self._operations))
                if ready is not None:
                    ready.set()
                await lost.wait()
                log.warning("connection to RabbitMQ lost; reconnecting")
            except (ConnectionError, AMQPConnectionError, ChannelInvalidStateError) as exc:
                log.warning("connection to RabbitMQ failed (%s); reconnecting", exc)
            finally:
                await self._connection.close()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_for_cancels(self) -> None:
        assert self._connection is not None
        # Passively, as the operation queues: the exchange is the gateway's, and a
        # least-privilege worker user may not declare it.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(ChannelNotFoundEntity),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                channel = await self._connection.channel()
                try:
                    exchange = await channel.declare_exchange(CANCEL_EXCHANGE, passive=True)
                except ChannelNotFoundEntity:
                    log.info("exchange %s not declared yet (is the gateway up?)", CANCEL_EXCHANGE)
                    raise
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)

        async def on_cancel(message: AbstractIncomingMessage) -> None:
            job_id = message.correlation_id
            if not job_id:
                return
            self._cancelled[job_id] = None
            while len(self._cancelled) > REMEMBERED_CANCELS:
                self._cancelled.popitem(last=False)
            task = self._running.get(job_id)
            if task is not None:
                log.info("job %s cancelled by the gateway", job_id)
                task.cancel()

        await queue.consume(on_cancel, no_ack=True)

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
                    log.info("queue %s not declared yet (is the gateway up?)", operation.op)
                    raise
        await channel.set_qos(prefetch_count=operation.prefetch)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(channel, operation, message)

        await queue.consume(on_message)

    async def _handle(
        self, channel: AbstractChannel, operation: _Operation, message: AbstractIncomingMessage
    ) -> None:
        reply_to, job_id = message.reply_to, message.correlation_id or ""
        headers = dict(message.headers or {})
        with _run_span(operation.op, job_id, headers, self.tracer_provider) as trace:
            answer_headers: dict[str, Any] = {} if trace is None else dict(trace.headers())

            async def answer(kind: AnswerType, body: bytes) -> None:
                if not reply_to:
                    return
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        correlation_id=job_id,
                        type=kind.value,
                        user_id=self.user,
                        headers=answer_headers or None,
                    ),
                    routing_key=reply_to,
                )

            job = JobContext(job_id, operation.op, headers, answer, trace)
            await self._take(channel, operation, message, job)

    async def _take(
        self,
        channel: AbstractChannel,
        operation: _Operation,
        message: AbstractIncomingMessage,
        job: JobContext,
    ) -> None:
        """Run the job `message` asks for, or reject or skip it, and answer."""
        job_id, answer = job.id, job._answer

        if self.gateway_user is not None and message.user_id != self.gateway_user:
            # Put into the queue by someone other than the gateway (no HTTP auth, no
            # contract check): not run, not answered; the gateway drops its dead letter.
            log.warning(
                "request %s on %s published by broker user %r, not the gateway's; rejected",
                job_id,
                operation.op,
                message.user_id,
            )
            await message.reject(requeue=False)
            return
        log.debug("job %s of %s taken (trace_id=%s)", job_id, operation.op, job.trace_id)
        if job_id in self._cancelled or (job.deadline is not None and job.deadline < time.time()):
            await message.ack()  # cancelled or expired already: the gateway has said so
            return
        if operation.long_running:
            await job.started()
            await message.ack()  # from here on the lease, not the unacked message, guards it
        body = await self._run(operation, job, message.body)
        if body is not None:
            await answer(*body)
        # Only now, with the answer confirmed by RabbitMQ, is the request done with.
        if not operation.long_running:
            await message.ack()

    async def _run(
        self, operation: _Operation, job: JobContext, raw: bytes
    ) -> tuple[AnswerType, bytes] | None:
        """Run the handler; the answer to send, or None if the job was cancelled or expired."""

        async def call() -> JSON:
            result = operation.handler(orjson.loads(raw), job)
            return await result if inspect.isawaitable(result) else result

        task = asyncio.create_task(call())
        self._running[job.id] = task
        beat = asyncio.create_task(self._heartbeats(job))
        timeout = None if job.deadline is None else max(job.deadline - time.time(), 0)
        try:
            async with asyncio.timeout(timeout):
                result = await task
            return AnswerType.RESULT, orjson.dumps(result)
        except JobFailed as failure:
            return AnswerType.ERROR, orjson.dumps(failure.body())
        except orjson.JSONDecodeError:
            return AnswerType.ERROR, orjson.dumps(
                JobFailed("invalid_request", "the request is not JSON").body()
            )
        except TimeoutError:
            log.warning(
                "job %s passed its deadline; the gateway expires it (trace_id=%s)",
                job.id,
                job.trace_id,
            )
            return None
        except asyncio.CancelledError:
            if job.id in self._cancelled and not _current_task_cancelling():
                return None
            raise
        except Exception as exc:
            log.exception("job %s (%s) failed (trace_id=%s)", job.id, operation.op, job.trace_id)
            return AnswerType.ERROR, orjson.dumps(
                JobFailed("worker_error", f"{type(exc).__name__}: {exc}").body()
            )
        finally:
            beat.cancel()
            task.cancel()
            self._running.pop(job.id, None)

    async def _heartbeats(self, job: JobContext) -> None:
        interval = job.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await job.heartbeat()
            except Exception:
                log.warning("job %s: heartbeat not sent", job.id, exc_info=True)

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


def _current_task_cancelling() -> bool:
    """True if the task running us (not the handler) is being cancelled: a shutdown."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@contextlib.contextmanager
def _run_span(
    op: str, job_id: str, headers: JSONObject, provider: Any
) -> Iterator[TraceContext | None]:
    """The worker's place in the request's trace for one job, while it is handled: a span
    of its own if OpenTelemetry is installed and set up in this process (its tracer
    provider), else just a new span id in the request's trace. None if the request
    carries no valid `traceparent`."""
    request = TraceContext.parse(headers.get(HEADER_TRACEPARENT), headers.get(HEADER_TRACESTATE))
    if request is None or _otel is None:
        yield None if request is None else request.child()
        return
    tracer = _otel.get_tracer("gateway.worker", tracer_provider=provider)
    with tracer.start_as_current_span(
        f"process {op}",
        context=otel_context(request),
        kind=_otel.SpanKind.CONSUMER,
        attributes={"messaging.system": "rabbitmq", "messaging.message.id": job_id},
    ) as span:
        # No SDK set up: a non-recording span with the parent's ids; a fresh one instead.
        own = span.get_span_context()
        recording = own.is_valid and own.span_id != int(request.span_id, 16)
        yield TraceContext.of_span(span, request.state) if recording else request.child()
