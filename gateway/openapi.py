"""`/openapi.json`, generated from the contracts and the gateway's wire schemas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__
from gateway.contracts import Contract, ContractRegistry
from gateway.topic_contracts import TopicRegistry
from gateway.types import JSON, JSONObject

WIRE_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "wire"
WIRE_NAMES = {"job.json": "Job", "event.json": "Event", "error.json": "Error"}


def wire_schemas() -> JSONObject:
    """The gateway's wire schemas (schemas/wire/), by component name, without `$schema`
    and `$id`: what /openapi.json and /asyncapi.json embed."""
    schemas: JSONObject = {}
    for filename, name in WIRE_NAMES.items():
        path = WIRE_SCHEMAS / filename
        if path.exists():
            doc = orjson.loads(path.read_bytes())
            schemas[name] = {k: v for k, v in doc.items() if k not in ("$schema", "$id")}
        else:  # installed without the repository's schemas/: a permissive stand-in
            schemas[name] = {"type": "object"}
    return schemas


def rewrite_refs(node: JSON, target: Callable[[str], str]) -> JSON:
    """A contract's schema with each `#/definitions/<rest>` reference pointed at
    `target(<rest>)`: where a generated document keeps the contract's definitions."""
    if isinstance(node, dict):
        out = {k: rewrite_refs(v, target) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            out["$ref"] = target(ref.removeprefix("#/definitions/"))
        return out
    if isinstance(node, list):
        return [rewrite_refs(v, target) for v in node]
    return node


def _rewrite_refs(node: JSON, op: str) -> JSON:
    """Point a contract's `#/definitions/x` references at its components."""
    return rewrite_refs(node, lambda rest: f"#/components/schemas/{op}.{rest}")


def _ref(name: str) -> JSONObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSONObject, description: str) -> JSONObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _events_page(item: str, description: str, stream_event: JSONObject) -> JSONObject:
    """An events endpoint's answer: a long-poll's `{"events": [...], "next": S}`, or with
    `Accept: text/event-stream` an SSE stream of `stream_event`s (see `_sse_event`)."""
    page = _json(
        {
            "type": "object",
            "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": _ref(item)},
                "next": {"type": "integer"},
            },
        },
        description,
    )
    page["content"]["text/event-stream"] = {"schema": stream_event}
    return page


# -- Server-Sent Events -------------------------------------------------------------------
# How a stream is described, under OpenAPI 3.1 (what this document declares): 3.1 cannot
# say "a sequence of items" (3.2's `itemSchema` is not allowed, and openapi-spec-validator
# refuses it), and tools read a 3.1 `text/event-stream` `schema` as the schema of ONE
# event (schemathesis does; 3.2 reads `schema` as the whole stream, an array). So here
# `schema` is one event as an EventSource dispatches it, `{"event", "id", "data"}`, with
# `data` the JSON text and `contentSchema` what it parses to, as 3.2's own SSE example
# does; the stream is a sequence of them. Comments (`: ping`), `retry:` and an `id:`
# alone dispatch no event, so they are not described.

SSE_ID: JSONObject = {
    "type": "string",
    "pattern": "^[0-9]+$",
    "description": "The event's `seq`: resume after it with Last-Event-ID (or ?after=)",
}


def _sse_event(event: str, data: JSONObject, description: str) -> JSONObject:
    """One SSE event of type `event` whose `data:` is JSON matching `data`."""
    return {
        "type": "object",
        "description": description,
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"const": event},
            "id": SSE_ID,
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


NO_DATA: JSONObject = {"type": "null"}
JOB_EVENTS: dict[str, str] = {
    "queued": "Accepted; waiting for a worker. `data`: null",
    "started": "A worker took it (its `started` answer). `data`: null",
    "progress": "A progress answer of the worker. `data`: the contract's `progress`",
    "result": "Succeeded (terminal). `data`: the result, as the contract's `result` says",
    "error": "Failed (terminal). `data`: the error, as the job resource's `error`",
    "cancelled": "Cancelled by a client (terminal). `data`: the error (code `cancelled`)",
    "expired": "Not done by its deadline (terminal). `data`: the error (code `expired`)",
}
"""Every job event type (gateway/types.py `EventType`; a test checks none is missing)
and what its event means."""
OP_EVENTS = ("progress", "result")
"""The event types whose `data` depends on the operation's contract."""


def _job_stream(contracts: ContractRegistry, schemas: JSONObject) -> JSONObject:
    """Components for the SSE events of jobs: one per event type whose `data` is the same
    for every operation (`SseEvent.<type>`), and per operation its own (`<op>.SseEvent.
    <type>`) and the union of all of its job's events, discriminated by `event`
    (`<op>.SseEvent`). The stream's event schema: one of some operation's."""
    job = schemas["Job"]
    schemas["JobError"] = job.get("properties", {}).get("error", {"type": "object"})
    shared = {
        "queued": NO_DATA,
        "started": NO_DATA,
        "error": _ref("JobError"),
        "cancelled": _ref("JobError"),
        "expired": _ref("JobError"),
    }
    for kind, data in shared.items():
        schemas[f"SseEvent.{kind}"] = _sse_event(kind, data, JOB_EVENTS[kind])
    for contract in contracts.values():
        op = contract.op
        own: dict[str, JSONObject] = {
            "progress": (
                _ref(f"{op}.progress")
                if contract.progress is not None
                else {"description": "Any JSON: the contract has no `progress` schema"}
            ),
            "result": _ref(f"{op}.result"),
        }
        for kind, data in own.items():
            schemas[f"{op}.SseEvent.{kind}"] = _sse_event(kind, data, JOB_EVENTS[kind])
        mapping = {
            kind: f"#/components/schemas/{op}.SseEvent.{kind}"
            if kind in OP_EVENTS
            else f"#/components/schemas/SseEvent.{kind}"
            for kind in JOB_EVENTS
        }
        schemas[f"{op}.SseEvent"] = {
            "description": f"One event of the SSE stream of a {op} job",
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "event", "mapping": mapping},
        }
    return {
        "description": "One event of the stream (`<op>.SseEvent` for a job of `<op>`); the "
        "stream ends after the terminal event (`result`, `error`, `cancelled`, `expired`)",
        "anyOf": [_ref(f"{op}.SseEvent") for op in contracts],
    }


ERRORS = {
    "400": _json(_ref("Error"), "Malformed JSON or a bad parameter"),
    "404": _json(_ref("Error"), "Unknown operation or job"),
    "413": _json(_ref("Error"), "Body too large"),
    "415": _json(_ref("Error"), "Body is not JSON"),
    "422": _json(_ref("Error"), "Body does not match the contract"),
    "503": _json(_ref("Error"), "Broker unavailable; retry after Retry-After seconds"),
}
WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 0},
    "description": "Seconds to hold the request",
}
AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "An event number",
}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "expired"]
LIST_JOBS: JSONObject = {
    "get": {
        "operationId": "list_jobs",
        "description": "The caller's jobs (with auth off, everyone's), newest first. "
        "A job or subscribe token may not list jobs.",
        "parameters": [
            {
                "name": "op",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Only this operation's jobs",
            },
            {
                "name": "status",
                "in": "query",
                "required": False,
                "schema": {"enum": STATUSES},
                "description": "Only the jobs in this status",
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The `next_cursor` of the page before, as it came",
            },
        ],
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["jobs", "next_cursor"],
                    "properties": {
                        "jobs": {"type": "array", "items": _ref("Job")},
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Where the next page starts; null on the last",
                        },
                    },
                },
                "A page of jobs",
            ),
            "400": ERRORS["400"],
            "401": _json(_ref("Error"), "Authentication required, or a bad token"),
            "403": _json(_ref("Error"), "A job or subscribe token"),
            "503": _json(_ref("Error"), "Store unavailable; retry after Retry-After seconds"),
        },
    }
}


def _submit(contract: Contract) -> JSONObject:
    return {
        "post": {
            "operationId": f"submit_{contract.op}",
            "summary": contract.settings.description or contract.document.get("description", ""),
            "parameters": [
                WAIT,
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(f"{contract.op}.request")}},
            },
            "responses": {
                "200": _json(_ref("Job"), "Finished within the wait"),
                "202": _json(_ref("Job"), "Accepted; follow Location"),
                **{k: v for k, v in ERRORS.items() if k != "404"},
                "409": _json(_ref("Error"), "Idempotency-Key reused with another request"),
            },
        }
    }


TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A topic contract's name (the family), or it and more words (one key)",
}
TOPIC_MESSAGE: JSONObject = {
    "type": "object",
    "required": ["seq", "type", "time", "topic", "data"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1, "description": "Its offset in the stream"},
        "type": {"const": "message"},
        "time": {"type": "string", "format": "date-time"},
        "topic": {"type": "string"},
        "data": {"description": "The message, as its topic contract says"},
    },
}


def _topic_paths(topics: TopicRegistry, schemas: JSONObject) -> dict[str, Any]:
    schemas["TopicMessage"] = TOPIC_MESSAGE
    for contract in topics.values():
        prefix = f"topic.{contract.name}"
        for name, definition in contract.document["definitions"].items():
            schemas[f"{prefix}.{name}"] = _rewrite_refs(definition, prefix)
        schemas[f"{prefix}.SseEvent"] = _sse_event(
            "message",
            _ref(f"{prefix}.message"),
            f"A message of topic {contract.name} or one of its keys: `data` is the message",
        )
    stream: JSONObject = {
        "description": "One event of the stream (`topic.<name>.SseEvent` for contract "
        "`<name>`'s topics); the stream never ends by itself",
        "anyOf": [_ref(f"topic.{name}.SseEvent") for name in topics],
    }
    paths: dict[str, Any] = {
        "/v1/topics": {
            "get": {
                "operationId": "list_topics",
                "responses": {"200": {"description": "The topic contracts"}},
            }
        },
        "/v1/topics/{topic}/events": {
            "get": {
                "operationId": "get_topic_events",
                "description": "Long-poll JSON; with `Accept: text/event-stream`, an SSE "
                "stream (`id: <seq>`, `event: message`, `data: <the message>`) that "
                "honours Last-Event-ID. Without `after`: from the next message.",
                "parameters": [TOPIC, WAIT, {**AFTER, "description": "A message's seq"}],
                "responses": {
                    "200": _events_page("TopicMessage", "Messages after `after`", stream),
                    "400": ERRORS["400"],
                    "404": ERRORS["404"],
                },
            }
        },
        "/v1/topics/{topic}/tokens": {
            "post": {
                "operationId": "new_subscribe_token",
                "parameters": [TOPIC],
                "responses": {"200": {"description": "A subscribe token for the topic"}},
            }
        },
    }
    for contract in topics.values():
        prefix = f"topic.{contract.name}"
        paths[f"/v1/topics/{contract.name}"] = {
            "get": {
                "operationId": f"topic_contract_{contract.name}",
                "responses": {"200": {"description": "The topic contract (JSON Schema)"}},
            },
            "post": {
                "operationId": f"publish_{contract.name}",
                "summary": contract.settings.description,
                "description": "Publish to the family's name; its keys (more words) take "
                "the same message at /v1/topics/{topic}.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(f"{prefix}.message")}},
                },
                "responses": {
                    "202": {"description": "Confirmed by RabbitMQ"},
                    **{k: v for k, v in ERRORS.items() if k != "404"},
                },
            },
        }
    return paths


UNAUTHORIZED = _json(_ref("Error"), "Auth is on and no valid token was sent")
PERCENTILES: JSONObject = {
    "type": ["object", "null"],
    "description": "Seconds (nearest rank, to the ms); null when no job had one",
    "required": ["p50", "p90", "max"],
    "properties": {k: {"type": "number", "minimum": 0} for k in ("p50", "p90", "max")},
}
COUNT: JSONObject = {"type": "integer", "minimum": 0}
OP_STATS: JSONObject = {
    "type": "object",
    "required": [
        "op",
        "queue",
        "window_seconds",
        "accepted",
        "finished",
        "outcomes",
        "accepted_per_minute",
        "finished_per_minute",
        "queue_wait_seconds",
        "run_seconds",
        "sampled",
        "complete",
    ],
    "properties": {
        "op": {"type": "string"},
        "queue": {
            "type": ["object", "null"],
            "description": "RabbitMQ's passive declare of the operation's queue (at most a "
            "second old); null when RabbitMQ did not answer in time or has no such queue",
            "required": ["name", "messages", "consumers"],
            "properties": {
                "name": {"type": "string"},
                "messages": {**COUNT, "description": "Waiting for a worker"},
                "consumers": {**COUNT, "description": "Workers consuming the queue"},
            },
        },
        "queue_error": {"type": "string", "description": "Why `queue` is null"},
        "window_seconds": {
            "type": "number",
            "description": "The span the figures cover: 300, or less when the sample hit "
            "its limit (`complete` false: then the latest jobs only)",
        },
        "accepted": {**COUNT, "description": "Jobs created within the window"},
        "finished": {**COUNT, "description": "Jobs that ended within the window"},
        "outcomes": {
            "type": "object",
            "required": ["succeeded", "failed", "cancelled", "expired"],
            "properties": {k: COUNT for k in ("succeeded", "failed", "cancelled", "expired")},
        },
        "accepted_per_minute": {"type": "number", "minimum": 0},
        "finished_per_minute": {"type": "number", "minimum": 0},
        "queue_wait_seconds": {
            **PERCENTILES,
            "description": "First answer minus creation, of jobs first answered in the window",
        },
        "run_seconds": {
            **PERCENTILES,
            "description": "End minus first answer, of jobs that succeeded or failed within "
            "the window",
        },
        "sampled": {**COUNT, "description": "Jobs the figures come from"},
        "complete": {"type": "boolean"},
    },
}
ME: JSONObject = {
    "type": "object",
    "required": ["auth", "subject", "scopes"],
    "properties": {
        "auth": {"type": "boolean", "description": "Whether auth is on"},
        "subject": {
            "type": ["string", "null"],
            "description": "Who, as job owners record it (`key:<subject>` for an API key, "
            "`jwt:<len(iss)>:<iss>:<sub>` for a JWT); null with auth off",
        },
        "scopes": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}


def _console_paths(contracts: ContractRegistry, schemas: JSONObject) -> dict[str, Any]:
    """`/v1/me`, and each operation's `/v1/ops/{op}/stats` (for the web console)."""
    schemas["OpStats"], schemas["Me"] = OP_STATS, ME
    paths: dict[str, Any] = {
        "/v1/me": {
            "get": {
                "operationId": "me",
                "description": "Who the caller is (an API key or a JWT) and what it may do.",
                "responses": {"200": _json(_ref("Me"), "The caller"), "401": UNAUTHORIZED},
            }
        }
    }
    for contract in contracts.values():
        paths[f"/v1/ops/{contract.op}/stats"] = {
            "get": {
                "operationId": f"stats_{contract.op}",
                "description": "Live figures: the queue as RabbitMQ says, and the jobs of "
                "the last 5 minutes. Needs the scope to submit to the operation.",
                "responses": {
                    "200": _json(_ref("OpStats"), "The figures (at most a second old)"),
                    "401": UNAUTHORIZED,
                    "403": _json(_ref("Error"), "No scope for the operation"),
                    "503": _json(_ref("Error"), "The job store cannot answer now"),
                },
            }
        }
    return paths


def build_openapi(contracts: ContractRegistry, topics: TopicRegistry | None = None) -> JSONObject:
    schemas: JSONObject = wire_schemas()
    for contract in contracts.values():
        for name, definition in contract.document["definitions"].items():
            schemas[f"{contract.op}.{name}"] = _rewrite_refs(definition, contract.op)
    job_stream = _job_stream(contracts, schemas)
    paths: dict[str, Any] = {
        "/v1/ops": {
            "get": {
                "operationId": "list_ops",
                "responses": {"200": {"description": "The operations"}},
            }
        },
        "/v1/jobs": LIST_JOBS,
        "/v1/jobs/{job_id}": {
            "delete": {
                "operationId": "cancel_job",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled (or already cancelled)"),
                    "404": ERRORS["404"],
                    "409": _json(_ref("Error"), "The job had already ended"),
                },
            },
            "get": {
                "operationId": "get_job",
                "parameters": [JOB_ID, WAIT, AFTER],
                "responses": {
                    "200": _json(_ref("Job"), "The job"),
                    "400": ERRORS["400"],
                    "404": ERRORS["404"],
                },
            },
        },
        "/v1/jobs/{job_id}/events": {
            "get": {
                "operationId": "get_job_events",
                "description": "Long-poll JSON; with `Accept: text/event-stream`, an SSE "
                "stream (`id: <seq>`, `event: <type>`, `data: <JSON>`; a job of `<op>` sends "
                "`<op>.SseEvent`s) that honours Last-Event-ID and ends after the job's "
                "terminal event.",
                "parameters": [JOB_ID, WAIT, AFTER],
                "responses": {
                    "200": _events_page("Event", "Events after `after`", job_stream),
                    "400": ERRORS["400"],
                    "404": ERRORS["404"],
                },
            }
        },
        "/healthz": {
            "get": {"operationId": "healthz", "responses": {"200": {"description": "Up"}}}
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {
                    "200": {"description": "Broker and store reachable"},
                    "503": {"description": "Not ready"},
                },
            }
        },
    }
    for contract in contracts.values():
        paths[f"/v1/ops/{contract.op}"] = {
            "get": {
                "operationId": f"contract_{contract.op}",
                "responses": {"200": {"description": "The contract (JSON Schema)"}},
            },
            **_submit(contract),
        }
    if topics:
        paths.update(_topic_paths(topics, schemas))
    paths.update(_console_paths(contracts, schemas))
    return {
        "openapi": "3.1.0",
        "info": {"title": "AMQP HTTP gateway", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }
