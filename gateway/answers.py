"""What a worker's answer means for its job: AMQP message in, job event out.

The wire protocol (pinned; its words in gateway/wire.py): the AMQP `type` property is
absent or `result` (final result), `progress`, `error` (final failure, body
`{"error": {"code", "message"}}`) or `started`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from gateway.broker import Answer
from gateway.contracts import Contract
from gateway.jobs import error_body
from gateway.types import JSON, EventType, JSONObject
from gateway.wire import ANSWER_TYPES_WITH_BODY, AnswerType, answer_type

log = logging.getLogger("gateway.answers")

MAX_ERROR_TEXT = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    type: EventType
    data: JSON


def _worker_error(body: JSON) -> JSONObject:
    """The worker's `{"error": {...}}` body, kept if well-formed, wrapped if not."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        message = error.get("message")
        shaped: JSONObject = {
            "code": error["code"],
            "message": message if isinstance(message, str) else error["code"],
        }
        if "details" in error:
            shaped["details"] = error["details"]
        return shaped
    text = orjson.dumps(body).decode()[:MAX_ERROR_TEXT]
    return error_body("worker_error", f"the worker failed: {text}")


async def interpret(answer: Answer, contract: Contract) -> Outcome | None:
    """The event an answer makes, or None to drop it (logged). Async: a large answer is
    checked against the contract off the event loop."""
    kind = answer_type(answer.type)
    if kind == AnswerType.STARTED:
        return Outcome("started", None)
    if kind not in ANSWER_TYPES_WITH_BODY:
        log.warning("job %s: answer of unknown type %r dropped", answer.job_id, kind)
        return None
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return Outcome(
            "error", error_body("invalid_answer", f"the worker's {kind} answer is not JSON")
        )
    if kind == AnswerType.ERROR:
        return Outcome("error", _worker_error(body))
    if kind == AnswerType.PROGRESS:
        problems = await contract.check_progress(body, len(answer.body))
        if problems:
            log.warning(
                "job %s: progress violating the contract dropped: %s",
                answer.job_id,
                problems[0]["message"],
            )
            return None
        return Outcome("progress", body)
    problems = await contract.check_result(body, len(answer.body))
    if problems:
        return Outcome(
            "error",
            error_body(
                "invalid_result",
                f"the worker's result does not match the contract of {contract.op}: "
                f"{problems[0]['message']}",
                problems,
            ),
        )
    return Outcome("result", body)


def dead_letter_outcome(answer: Answer) -> Outcome:
    """A request RabbitMQ dead-lettered: rejected by a worker, expired, or over a limit."""
    reason = answer.headers.get("x-first-death-reason")
    if reason is None:
        deaths = answer.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            reason = deaths[0].get("reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    if reason == "expired":
        return Outcome(
            "expired",
            error_body("expired", "the request expired in the queue before a worker took it"),
        )
    if reason == "rejected":
        return Outcome(
            "error", error_body("rejected", "a worker rejected the request (nack without requeue)")
        )
    if reason == "delivery_limit":
        return Outcome(
            "error",
            error_body("delivery_limit", "the request was redelivered too often without an answer"),
        )
    return Outcome(
        "error",
        error_body(
            "dead_lettered", f"RabbitMQ dead-lettered the request ({reason or 'no reason given'})"
        ),
    )


def oversized_outcome(answer: Answer, limit: int) -> Outcome | None:
    """The failure an answer whose body is over `limit` bytes makes, or None if it fits.

    Checked before the body is parsed: a huge answer costs no parsing, validation or
    storage, and the job fails with a reason its client can act on instead of hanging.
    `started` and `heartbeat` bodies are ignored (never parsed or stored), so any size
    passes; an unknown type is dropped by `interpret` anyway.
    """
    kind = answer_type(answer.type)
    size = len(answer.body)
    if size <= limit or kind not in ANSWER_TYPES_WITH_BODY:
        return None
    # Sizes only: the body is the worker's, and may be anything.
    return Outcome(
        "error",
        error_body(
            "answer_too_large",
            f"the worker's {kind} answer is {size} bytes, over the gateway's limit of "
            f"{limit} bytes (--max-answer); large outputs belong in object storage, "
            f"the answer carrying a link",
        ),
    )
