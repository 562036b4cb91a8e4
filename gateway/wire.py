"""The AMQP wire vocabulary (pinned: docs/ and ARCHITECTURE.md), in one place.

The server (broker, answers, peers, service) and the Python worker kit speak the same
protocol; each names its words from here, so a typo is an import error rather than a
silently ignored message. Workers in other languages spell the same strings. Standard
library only: `gateway.worker` imports this without the server's dependencies.

Modelled on aio-pika's `RPCMessageType`: a `str` enum, so a member is the wire string
itself (it compares equal to, and is sent as, its value).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ANSWERS_QUEUE",
    "ANSWER_TYPES_WITH_BODY",
    "CANCEL_EXCHANGE",
    "CANCEL_TYPE",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "HEADER_ATTEMPT",
    "HEADER_DEADLINE",
    "HEADER_LEASE_SECONDS",
    "HEADER_TRACEPARENT",
    "HEADER_TRACESTATE",
    "NOTICES_EXCHANGE",
    "PROBE_ROUTING_KEY",
    "STORE_MARKER_QUEUE",
    "STREAM_OFFSET_HEADER",
    "TOPICS_EXCHANGE",
    "TOPIC_MARKER_TYPE",
    "AnswerType",
    "answer_type",
    "topic_stream",
]


class AnswerType(StrEnum):
    """The AMQP `type` property of a worker's answer (absent means `result`)."""

    RESULT = "result"
    """The final result; the body must match the contract's `result` schema."""
    PROGRESS = "progress"
    """A progress event (many allowed); the body matches the contract's `progress`."""
    ERROR = "error"
    """The final failure, body `{"error": {"code": ..., "message": ...}}`."""
    STARTED = "started"
    """Optional: marks the job running (a long-running worker's lease begins)."""
    HEARTBEAT = "heartbeat"
    """Proof of life for a long-running job: extends its lease, adds no event."""


ANSWER_TYPES_WITH_BODY: frozenset[str] = frozenset(
    {AnswerType.RESULT, AnswerType.PROGRESS, AnswerType.ERROR}
)
"""Answers whose JSON body the gateway parses, checks and stores."""


def answer_type(raw: str | None) -> str:
    """The answer type an AMQP `type` property names: absent or empty means `result`.
    A `str`, not an `AnswerType`: an unknown type is kept, to be logged and dropped."""
    return raw or AnswerType.RESULT


# -- request headers (the gateway sets them on every request message) --------------------

HEADER_ATTEMPT = "x-attempt"
"""1 for the first publish of a job, 2 when a retry of its Idempotency-Key publishes it."""
HEADER_DEADLINE = "x-deadline"
"""When the job expires, epoch milliseconds (absent: no deadline)."""
HEADER_LEASE_SECONDS = "x-lease-seconds"
"""How long a long-running worker may stay silent before the job fails `worker_lost`."""
HEADER_TRACEPARENT = "traceparent"
"""W3C Trace Context (gateway/trace_context.py): on a request, the trace it belongs to; on
an answer, the same trace id with the worker's own span id."""
HEADER_TRACESTATE = "tracestate"
"""W3C Trace Context's vendor data, passed on unchanged with `traceparent`."""

# -- exchanges, queues and routing keys the gateway owns ----------------------------------

ANSWERS_QUEUE = "gateway.answers"
"""Durable operations' `reply_to`: workers' answers, consumed by one gateway at a time."""
DEAD_LETTER_EXCHANGE = "gateway.dead-letter"
"""Every operation queue's dead-letter exchange (rejected, expired, over a limit)."""
DEAD_LETTER_QUEUE = "gateway.dead-letters"
"""Where those dead letters wait for a gateway to fail their jobs."""
CANCEL_EXCHANGE = "gateway.cancel"
"""Fanout of cancel notices to workers: body `{"job_id", "op"}`, `correlation_id` the job."""
CANCEL_TYPE = "cancel"
"""The AMQP `type` property of a cancel notice."""
NOTICES_EXCHANGE = "gateway.notices"
"""Fanout among gateway instances: a job's new event, so their waiters wake."""
STORE_MARKER_QUEUE = "gateway.store"
"""An empty queue whose arguments name the job store the virtual host belongs to."""
PROBE_ROUTING_KEY = "gateway.probe"
"""Routes nowhere: RabbitMQ confirms and drops a probe, proving it takes publishes."""

# -- topic streams ----------------------------------------------------------------------

TOPICS_EXCHANGE = "gateway.topics"
"""Topic exchange: a daemon publishes a topic's message here, the topic as routing key."""
STREAM_OFFSET_HEADER = "x-stream-offset"
"""RabbitMQ's: where a stream consumer starts, and each delivery's offset in the stream."""
TOPIC_MARKER_TYPE = "gateway.marker"
"""The AMQP `type` of the marker a gateway writes into a topic's stream before binding
it, so that the stream's first offset (0) is never a message: `?after=0` means all."""


def topic_stream(name: str) -> str:
    """The stream queue of topic contract `name`, bound to `TOPICS_EXCHANGE` with `name`
    and `name.#`."""
    return f"gateway.topics.{name}"
