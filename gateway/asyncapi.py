"""`/asyncapi.json`: the AMQP side of the gateway as an AsyncAPI 3.0 document.

`/openapi.json` tells HTTP clients what to send; workers and daemons, written in any
language, speak AMQP instead, and AsyncAPI is that side's standard (code generators,
AsyncAPI Studio, documentation). The document is generated from the same contracts, so
it cannot drift from them. The application it describes is a worker or daemon: it
receives each operation's requests from the queue `<op>` and answers to their
`reply_to`, may follow the cancel notices, and publishes topic messages. The protocol's
prose is docs/workers.md and docs/topics.md; its words come from gateway/wire.py.

Contract schemas are embedded as draft-07 JSON Schema (AsyncAPI's multi-format schema
object), exactly as written but for their `#/definitions/...` references, which point at
the components holding those definitions. No broker address or credentials appear: the
server is a `{host}` variable.

The snapshot docs/asyncapi.json is regenerated with
`python -m gateway.asyncapi [SCHEMAS_DIR] > docs/asyncapi.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway import __version__
from gateway.broker import queue_arguments
from gateway.contracts import Contract, ContractRegistry
from gateway.openapi import rewrite_refs, wire_schemas
from gateway.topic_contracts import TopicContract, TopicRegistry
from gateway.types import JSONObject
from gateway.wire import (
    ANSWERS_QUEUE,
    CANCEL_EXCHANGE,
    CANCEL_TYPE,
    DEAD_LETTER_EXCHANGE,
    HEADER_ATTEMPT,
    HEADER_DEADLINE,
    HEADER_LEASE_SECONDS,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    TOPICS_EXCHANGE,
    AnswerType,
    topic_stream,
)

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
DRAFT_07 = "application/schema+json;version=draft-07"
"""The schema format of the contracts (AsyncAPI's name for draft-07 JSON Schema)."""
JSON_CONTENT = "application/json"
PERSISTENT, TRANSIENT = 2, 1  # AMQP delivery modes
TRACEPARENT_PATTERN = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""W3C Trace Context, version 00 (what gateway/trace_context.py reads)."""

# Runtime expressions can point only into a message's headers or payload: the AMQP
# properties `correlation_id` and `reply_to` are named as headers, as AsyncAPI's own AMQP
# RPC examples do.
CORRELATION_ID_LOCATION = "$message.header#/correlation_id"
REPLY_TO_LOCATION = "$message.header#/reply_to"

DOCS = "docs/workers.md"
TOPIC_DOCS = "docs/topics.md"


def _ref(pointer: str) -> JSONObject:
    return {"$ref": pointer}


def _schema_ref(name: str) -> JSONObject:
    return _ref(f"#/components/schemas/{name}")


def _draft_07(schema: object) -> JSONObject:
    """A multi-format schema object holding draft-07 JSON Schema."""
    return {"schemaFormat": DRAFT_07, "schema": schema}


def _definitions_target(prefix: str) -> Callable[[str], str]:
    """Where a contract's `#/definitions/<name>/<more>` points in this document: into the
    component `<prefix>.<name>`, whose JSON Schema is under its `schema`."""

    def target(rest: str) -> str:
        name, slash, inner = rest.partition("/")
        return f"#/components/schemas/{prefix}.{name}/schema{slash}{inner}"

    return target


def _add_definitions(schemas: JSONObject, prefix: str, document: JSONObject) -> None:
    """A contract's definitions, as components `<prefix>.<definition>` (the names
    /openapi.json gives them too)."""
    target = _definitions_target(prefix)
    for name, definition in document["definitions"].items():
        schemas[f"{prefix}.{name}"] = _draft_07(rewrite_refs(definition, target))


def _amqp(binding: JSONObject) -> JSONObject:
    return {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}}


# -- shared parts -----------------------------------------------------------------------

REQUEST_HEADERS: JSONObject = {
    "type": "object",
    "description": "The request's AMQP headers (field table), set by the gateway.",
    "required": [HEADER_ATTEMPT, HEADER_LEASE_SECONDS],
    "properties": {
        HEADER_DEADLINE: {
            "type": "integer",
            "description": "When the job expires, epoch milliseconds; absent: no deadline. "
            "Stop at it: a later answer is ignored.",
        },
        HEADER_ATTEMPT: {
            "type": "integer",
            "enum": [1, 2],
            "description": "1, or 2 when the gateway published the request again (a client "
            "retried with its Idempotency-Key): the same job, the same message_id.",
        },
        HEADER_LEASE_SECONDS: {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "The lease of a running job: after a `started` answer, answer "
            "(heartbeat or progress) at least every x-lease-seconds / 3 seconds, or the job "
            "fails with `worker_lost`.",
        },
        HEADER_TRACEPARENT: {
            "type": "string",
            "pattern": TRACEPARENT_PATTERN,
            "description": "W3C Trace Context: the trace the job belongs to; the gateway's "
            "span is the parent of the worker's.",
        },
        HEADER_TRACESTATE: {
            "type": "string",
            "description": "W3C Trace Context's vendor data, to pass on unchanged.",
        },
    },
}
ANSWER_HEADERS: JSONObject = {
    "type": "object",
    "description": "Optional AMQP headers of an answer: continue the request's trace (the "
    "same trace id, a span id of the worker's own) and pass its tracestate on.",
    "properties": {
        HEADER_TRACEPARENT: {"type": "string", "pattern": TRACEPARENT_PATTERN},
        HEADER_TRACESTATE: {"type": "string"},
    },
}
CANCEL_NOTICE: JSONObject = {
    "type": "object",
    "required": ["job_id", "op"],
    "properties": {
        "job_id": {"type": "string", "description": "The cancelled job (a request's message_id)"},
        "op": {"type": "string", "description": "Its operation"},
    },
}
IGNORED_BODY: JSONObject = {"description": "Anything (`null` will do): the gateway ignores it."}
JOB_CORRELATION: JSONObject = {
    "description": "The AMQP `correlation_id` property: the job id, equal to the request's "
    "`message_id` (every copy of a job carries it: deduplicate by it). An answer copies the "
    "request's.",
    "location": CORRELATION_ID_LOCATION,
}


def _answer_message(
    kind: AnswerType, name: str, title: str, payload: JSONObject, description: str
) -> JSONObject:
    """One kind of answer: its AMQP `type` property is `kind`."""
    return {
        "name": name,
        "title": title,
        "description": description,
        "contentType": JSON_CONTENT,
        "headers": _schema_ref("AnswerHeaders"),
        "payload": payload,
        "correlationId": _ref("#/components/correlationIds/job"),
        "bindings": _amqp({"messageType": str(kind)}),
    }


SHARED_ANSWERS: dict[AnswerType, JSONObject] = {
    AnswerType.ERROR: _answer_message(
        AnswerType.ERROR,
        AnswerType.ERROR,
        "Error",
        _schema_ref("Error"),
        "The final failure: the job fails with this code and message (and `details`, if "
        "any). The first final answer (a result or an error) wins.",
    ),
    AnswerType.STARTED: _answer_message(
        AnswerType.STARTED,
        AnswerType.STARTED,
        "Started",
        _schema_ref("IgnoredBody"),
        "Optional: the job is running and its lease starts. A long job sends it, then "
        f"acks the request, then heartbeats ({DOCS}, the lease pattern).",
    ),
    AnswerType.HEARTBEAT: _answer_message(
        AnswerType.HEARTBEAT,
        AnswerType.HEARTBEAT,
        "Heartbeat",
        _schema_ref("IgnoredBody"),
        "Proof of life of a long job: extends its lease by x-lease-seconds; adds no event.",
    ),
}


# -- operations -------------------------------------------------------------------------


def _summary(contract: Contract) -> str:
    description = contract.settings.description or contract.document.get("description", "")
    return description if isinstance(description, str) else ""


def _request_channel(contract: Contract) -> JSONObject:
    op, settings = contract.op, contract.settings
    kind = "quorum" if settings.durability == "durable" else "classic"
    return {
        "address": op,
        "title": f"Requests of {op}",
        "description": (
            f"The durable {kind} queue `{op}`, declared by the gateway: declare it "
            f"passively, or not at all. It holds at most {settings.max_queue_length} "
            "requests (beyond that the gateway is refused and answers its client 503). "
            "A request a worker rejects (`basic.nack` or `basic.reject` without requeue), "
            "one still queued at its deadline (its `expiration`), or one a quorum queue "
            "redelivered too often is dead-lettered to the exchange "
            f"`{DEAD_LETTER_EXCHANGE}`, and the gateway fails its job (`rejected`, "
            "`delivery_limit`) or marks it `expired`."
        ),
        "messages": {"request": _ref(f"#/components/messages/{op}.request")},
        "bindings": _amqp(
            {
                "is": "queue",
                "queue": {"name": op, "durable": True, "exclusive": False, "autoDelete": False},
                # What the gateway declares it with: a worker that declares it must match.
                "x-queue-arguments": queue_arguments(contract),
            }
        ),
    }


def _answer_kinds(contract: Contract) -> list[AnswerType]:
    """The answers a worker of `contract` may send, in document order."""
    kinds = [AnswerType.RESULT]
    if contract.progress is not None:
        kinds.append(AnswerType.PROGRESS)
    return [*kinds, AnswerType.ERROR, AnswerType.STARTED, AnswerType.HEARTBEAT]


def _answer_message_ref(op: str, kind: AnswerType) -> JSONObject:
    own = kind in (AnswerType.RESULT, AnswerType.PROGRESS)
    return _ref(f"#/components/messages/{op}.{kind}" if own else f"#/components/messages/{kind}")


def _answers_channel(contract: Contract) -> JSONObject:
    op = contract.op
    if contract.settings.durability == "durable":
        where = f"for {op} (a durable operation) the shared queue `{ANSWERS_QUEUE}`"
    else:
        where = (
            f"for {op} (a light operation) the exclusive queue of the gateway instance that "
            "accepted the job (`gateway.replies.<random>`, a new name whenever it reconnects)"
        )
    return {
        "address": None,  # the request's reply_to: known only at run time
        "title": f"Answers to {op} requests",
        "description": (
            f"The queue the request's `reply_to` names: {where}. Copy it from each "
            'request; never hard-code it. Publish to the default exchange (`""`) with '
            "`reply_to` as routing key, `correlation_id` copied from the request, "
            "`content_type` application/json, the AMQP `type` saying which answer it is, "
            f'and your broker user as `user_id` ({DOCS}, "Answering as your own user").'
        ),
        "messages": {str(kind): _answer_message_ref(op, kind) for kind in _answer_kinds(contract)},
        "bindings": _amqp(
            {
                "is": "routingKey",
                "exchange": {"name": "", "type": "default", "durable": True, "autoDelete": False},
            }
        ),
    }


def _operation_messages(contract: Contract) -> dict[str, JSONObject]:
    """The messages of one operation's own: its request, its result and progress."""
    op = contract.op
    messages: dict[str, JSONObject] = {
        f"{op}.request": {
            "name": f"{op}.request",
            "title": f"{op} request",
            "summary": _summary(contract),
            "description": "A job's request: the client's JSON, checked against the contract "
            "before it was published.",
            "contentType": JSON_CONTENT,
            "headers": _schema_ref("RequestHeaders"),
            "payload": _schema_ref(f"{op}.request"),
            "correlationId": _ref("#/components/correlationIds/job"),
            "bindings": _amqp({"messageType": op}),
        },
        f"{op}.{AnswerType.RESULT}": _answer_message(
            AnswerType.RESULT,
            f"{op}.{AnswerType.RESULT}",
            f"{op} result",
            _schema_ref(f"{op}.result"),
            "The final result (AMQP `type` `result`, or absent). It must match the "
            "contract's `result`: else the job fails with `invalid_result`. The first final "
            "answer (a result or an error) wins.",
        ),
    }
    if contract.progress is not None:
        messages[f"{op}.{AnswerType.PROGRESS}"] = _answer_message(
            AnswerType.PROGRESS,
            f"{op}.{AnswerType.PROGRESS}",
            f"{op} progress",
            _schema_ref(f"{op}.progress"),
            "A progress event (any number; one equal to the job's latest adds nothing). "
            "It also extends a long job's lease. Progress off the contract is dropped.",
        )
    return messages


def _handle_operation(contract: Contract) -> JSONObject:
    op = contract.op
    durable = contract.settings.durability == "durable"
    return {
        "action": "receive",
        "channel": _ref(f"#/channels/requests.{op}"),
        "title": f"Handle {op}",
        "summary": _summary(contract),
        "description": (
            "Take a request, do the work, answer to its `reply_to`. A quick job acks the "
            "request after its answer; a long one answers `started`, acks, then heartbeats "
            f"until its final answer ({DOCS}). Skip a request past its x-deadline."
        ),
        "messages": [_ref(f"#/channels/requests.{op}/messages/request")],
        "bindings": _amqp(
            {"ack": True, "mandatory": True, "deliveryMode": PERSISTENT if durable else TRANSIENT}
        ),
        "reply": {
            "address": {
                "location": REPLY_TO_LOCATION,
                "description": "The request's AMQP `reply_to` property: the queue to answer "
                "to, through the default exchange.",
            },
            "channel": _ref(f"#/channels/answers.{op}"),
            "messages": [
                _ref(f"#/channels/answers.{op}/messages/{kind}") for kind in _answer_kinds(contract)
            ],
        },
    }


# -- cancel notices and topics -----------------------------------------------------------

CANCEL_CHANNEL: JSONObject = {
    "address": CANCEL_EXCHANGE,
    "title": "Cancel notices",
    "description": (
        f"The fanout exchange `{CANCEL_EXCHANGE}`: a notice for every cancelled job. Bind an "
        "exclusive queue of your own to it, and on a notice for a job you run, stop it (and "
        "send nothing). It exists once a gateway has started on the virtual host: declare it "
        "passively and retry until it is there, or declare it exactly as the gateway does "
        "(fanout, durable, not auto-delete, no arguments)."
    ),
    "messages": {"cancel": _ref("#/components/messages/cancel")},
    "bindings": _amqp(
        {
            "is": "routingKey",
            "exchange": {
                "name": CANCEL_EXCHANGE,
                "type": "fanout",
                "durable": True,
                "autoDelete": False,
            },
        }
    ),
}
CANCEL_MESSAGE: JSONObject = {
    "name": CANCEL_TYPE,
    "title": "Cancel notice",
    "description": "A client cancelled the job (DELETE /v1/jobs/{id}); it is already "
    "`cancelled`, and answers to it are ignored.",
    "contentType": JSON_CONTENT,
    "payload": _schema_ref("CancelNotice"),
    "correlationId": _ref("#/components/correlationIds/job"),
    "bindings": _amqp({"messageType": CANCEL_TYPE}),
}
CANCEL_OPERATION: JSONObject = {
    "action": "receive",
    "channel": _ref("#/channels/cancel"),
    "title": "Follow cancel notices",
    "summary": "Optional: stop work a client cancelled.",
    "messages": [_ref("#/channels/cancel/messages/cancel")],
}


def _topic_channel(contract: TopicContract) -> JSONObject:
    name = contract.name
    about = f"{contract.settings.description}. " if contract.settings.description else ""
    return {
        "address": name,
        "title": f"Topic {name}",
        "description": (
            f"{about}Publish to the topic exchange `{TOPICS_EXCHANGE}` with the topic as "
            f"routing key: `{name}` itself, or `{name}` followed by more dot-separated words "
            f"(`{name}.lobby`: one key of the family). The gateway keeps the messages in its "
            f"stream `{topic_stream(name)}` and delivers those that match the contract to "
            "HTTP subscribers; one off the contract is confirmed all the same, and dropped. "
            f"Use publisher confirms and `mandatory` ({TOPIC_DOCS})."
        ),
        "messages": {"message": _ref(f"#/components/messages/{name}.message")},
        "bindings": _amqp(
            {
                "is": "routingKey",
                "exchange": {
                    "name": TOPICS_EXCHANGE,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                },
            }
        ),
    }


def _topic_message(contract: TopicContract) -> JSONObject:
    message: JSONObject = {
        "name": f"{contract.name}.message",
        "title": f"{contract.name} message",
        "contentType": JSON_CONTENT,
        "payload": _schema_ref(f"topic.{contract.name}.message"),
    }
    if contract.settings.description:
        message["summary"] = contract.settings.description
    return message


def _publish_operation(contract: TopicContract) -> JSONObject:
    name = contract.name
    return {
        "action": "send",
        "channel": _ref(f"#/channels/topics.{name}"),
        "title": f"Publish to {name}",
        "summary": "A daemon publishes a message to the topic (no gateway code needed).",
        "messages": [_ref(f"#/channels/topics.{name}/messages/message")],
        "bindings": _amqp({"mandatory": True, "deliveryMode": PERSISTENT}),
    }


# -- the document -------------------------------------------------------------------------

INFO_DESCRIPTION = (
    "The AMQP side of the gateway, for authors of workers and daemons in any language: "
    "what the gateway publishes to RabbitMQ and what it takes back. The application "
    "described is a worker: it receives each operation's requests from the queue `<op>` "
    "and answers to their `reply_to`, may follow the cancel notices, and (a daemon) "
    f"publishes topic messages. Protocol: {DOCS} (and {TOPIC_DOCS}); `gateway conform` "
    "proves a worker against a contract. The HTTP side is /openapi.json. Generated from "
    "the contracts."
)
SERVERS: JSONObject = {
    "rabbitmq": {
        "host": "{host}",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "title": "RabbitMQ",
        "description": "The RabbitMQ the gateway uses: its address, virtual host and users "
        "are the deployment's (give each worker a broker user of its own).",
        "variables": {"host": {"default": "localhost:5672", "description": "host:port"}},
    }
}


def build_asyncapi(contracts: ContractRegistry, topics: TopicRegistry | None) -> JSONObject:
    """The AsyncAPI document of the operations `contracts` and the topics `topics`. Every
    map is filled in a sorted order, so the same contracts give the same bytes."""
    schemas: JSONObject = {
        "AnswerHeaders": ANSWER_HEADERS,
        "CancelNotice": CANCEL_NOTICE,
        "Error": _draft_07(wire_schemas()["Error"]),
        "IgnoredBody": IGNORED_BODY,
        "RequestHeaders": REQUEST_HEADERS,
    }
    channels: JSONObject = {}
    operations: JSONObject = {}
    messages: JSONObject = {str(kind): message for kind, message in SHARED_ANSWERS.items()}
    for contract in contracts.values():
        op = contract.op
        _add_definitions(schemas, op, contract.document)
        channels[f"requests.{op}"] = _request_channel(contract)
        channels[f"answers.{op}"] = _answers_channel(contract)
        operations[f"handle.{op}"] = _handle_operation(contract)
        messages.update(_operation_messages(contract))
    channels["cancel"] = CANCEL_CHANNEL
    operations["cancel"] = CANCEL_OPERATION
    messages["cancel"] = CANCEL_MESSAGE
    for topic in (topics or {}).values():
        _add_definitions(schemas, f"topic.{topic.name}", topic.document)
        channels[f"topics.{topic.name}"] = _topic_channel(topic)
        operations[f"publish.{topic.name}"] = _publish_operation(topic)
        messages[f"{topic.name}.message"] = _topic_message(topic)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "AMQP HTTP gateway: workers",
            "version": __version__,
            "description": INFO_DESCRIPTION,
        },
        "defaultContentType": JSON_CONTENT,
        "servers": SERVERS,
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": dict(sorted(messages.items())),
            "correlationIds": {"job": JOB_CORRELATION},
        },
    }


def dump(document: JSONObject) -> bytes:
    """The document as the snapshot holds it: indented, keys in the order built, a final
    newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: list[str]) -> None:
    """`python -m gateway.asyncapi [SCHEMAS_DIR]`: the document of SCHEMAS_DIR/ops and
    SCHEMAS_DIR/topics (default: the repository's schemas/), on stdout."""
    schemas = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "schemas"
    document = build_asyncapi(
        ContractRegistry.from_directory(schemas / "ops"),
        TopicRegistry.from_directory(schemas / "topics"),
    )
    sys.stdout.buffer.write(dump(document))


if __name__ == "__main__":
    main(sys.argv[1:])
