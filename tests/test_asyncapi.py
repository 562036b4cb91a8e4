"""`/asyncapi.json` (the AMQP side, for worker authors) and the SSE events of
`/openapi.json`, from a real gateway: the official AsyncAPI parser finds no error, the
document says what a worker needs (and what a real worker gets matches it), the snapshot
docs/asyncapi.json is current, and every SSE event a real stream sends matches its
operation's (or topic's) event schema."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from httpx_sse import aconnect_sse
from jsonschema import Draft7Validator, Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.asyncapi import build_asyncapi, dump
from gateway.contracts import ContractRegistry
from gateway.openapi import JOB_EVENTS
from gateway.topic_contracts import TopicRegistry
from gateway.types import EventType
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
)
from gateway.worker import Worker
from tests.support import ROOT, make_settings, serve_gateway

VALIDATOR = ROOT / "tests" / "node" / "asyncapi_validate.mjs"
SNAPSHOT = ROOT / "docs" / "asyncapi.json"
REGENERATE = ".venv/bin/python -m gateway.asyncapi > docs/asyncapi.json"
CONSOLE_CONTRACTS = ROOT / "tests" / "console"
LIGHT: dict[str, object] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "x-gateway": {"durability": "light"},
    "definitions": {"request": {"type": "object"}, "result": {}},
}


async def asyncapi_diagnostics(document: dict[str, Any]) -> list[dict[str, str]]:
    """What @asyncapi/parser says of the document (tests/node/asyncapi_validate.mjs)."""
    run = await asyncio.to_thread(
        subprocess.run,
        ["node", str(VALIDATOR)],
        input=orjson.dumps(document),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    diagnostics: list[dict[str, str]] = orjson.loads(run.stdout)
    return diagnostics


def schema_at(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def rewritten(schema: Any, op: str) -> Any:
    """A contract's schema with its `#/definitions/x` references as /asyncapi.json
    writes them."""
    if isinstance(schema, dict):
        out = {k: rewritten(v, op) for k, v in schema.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            name, slash, inner = ref.removeprefix("#/definitions/").partition("/")
            out["$ref"] = f"#/components/schemas/{op}.{name}/schema{slash}{inner}"
        return out
    if isinstance(schema, list):
        return [rewritten(v, op) for v in schema]
    return schema


class OpenApiSchemas:
    """Validate values against the components of an OpenAPI 3.1 document (JSON Schema
    2020-12), references resolved within the document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource: Resource[Any] = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)

    def errors(self, pointer: str, value: object) -> list[str]:
        validator = Draft202012Validator({"$ref": f"urn:openapi{pointer}"}, registry=self.registry)
        return [e.message for e in validator.iter_errors(value)]

    def check_sse_event(self, name: str, event: str, event_id: str, data: str) -> None:
        """An event as an EventSource dispatches it, against component `name`: its shape,
        then its `data` parsed against the `contentSchema` of its `event`'s branch."""
        pointer = f"#/components/schemas/{name}"
        as_dispatched = {"event": event, "id": event_id, "data": data}
        assert not self.errors(pointer, as_dispatched), (event, self.errors(pointer, as_dispatched))
        union = self.spec["components"]["schemas"][name]
        branch = union["discriminator"]["mapping"][event] if "oneOf" in union else pointer
        content = f"{branch}/properties/data/contentSchema"
        problems = self.errors(content, orjson.loads(data))
        assert not problems, (name, event, data, problems)


async def test_served_documents_describe_both_sides(rabbit, tmp_path: Path, run_worker) -> None:
    console = {
        path.stem: orjson.loads(path.read_bytes())
        for path in sorted(CONSOLE_CONTRACTS.glob("console.*.json"))
    }
    settings, names = make_settings(
        tmp_path, rabbit.url, {**console, "light": LIGHT}, topics={}, sse_ping_seconds=1.0
    )
    seen_headers: list[dict[str, Any]] = []
    async with serve_gateway(settings, names) as gw, gw.client() as http:
        asyncapi = (await http.get("/asyncapi.json")).json()
        spec = (await http.get("/openapi.json")).json()
        assert (await http.get("/asyncapi.json")).json() == asyncapi  # cached, the same

        # -- the official parser: no errors (warnings are shown, not failed) ---------------
        diagnostics = await asyncapi_diagnostics(asyncapi)
        errors = [d for d in diagnostics if d["severity"] == "error"]
        others = [d for d in diagnostics if d["severity"] != "error"]
        print(f"\n[asyncapi] {len(errors)} errors, {len(others)} other diagnostics: {others}")
        assert not errors, orjson.dumps(errors, option=orjson.OPT_INDENT_2).decode()
        assert "password" not in orjson.dumps(asyncapi).decode()
        assert str(rabbit.port) not in orjson.dumps(asyncapi["servers"]).decode()
        assert asyncapi["servers"]["rabbitmq"]["variables"]["host"]["default"] == "localhost:5672"

        # -- what a worker of math.add needs ----------------------------------------------
        add = gw.op("math.add")
        contract = gw.service.contracts[add].document
        schemas = asyncapi["components"]["schemas"]
        request_channel = asyncapi["channels"][f"requests.{add}"]
        assert request_channel["address"] == add
        assert request_channel["bindings"]["amqp"]["is"] == "queue"
        assert request_channel["bindings"]["amqp"]["queue"]["durable"] is True
        assert DEAD_LETTER_EXCHANGE in request_channel["description"]
        request = schema_at(asyncapi, request_channel["messages"]["request"]["$ref"])
        assert request["bindings"]["amqp"]["messageType"] == add
        assert request["contentType"] == "application/json"
        payload = schema_at(asyncapi, request["payload"]["$ref"])
        assert payload["schemaFormat"] == "application/schema+json;version=draft-07"
        assert payload["schema"] == contract["definitions"]["request"]
        correlation = schema_at(asyncapi, request["correlationId"]["$ref"])
        assert "correlation_id" in correlation["location"]
        headers = schema_at(asyncapi, request["headers"]["$ref"])["properties"]
        assert set(headers) == {
            HEADER_DEADLINE,
            HEADER_ATTEMPT,
            HEADER_LEASE_SECONDS,
            HEADER_TRACEPARENT,
            HEADER_TRACESTATE,
        }
        assert headers[HEADER_ATTEMPT]["enum"] == [1, 2]
        handle = asyncapi["operations"][f"handle.{add}"]
        assert handle["action"] == "receive"
        assert handle["bindings"]["amqp"]["deliveryMode"] == 2
        reply = handle["reply"]
        assert "reply_to" in reply["address"]["location"]
        answers = schema_at(asyncapi, reply["channel"]["$ref"])
        assert answers["address"] is None and ANSWERS_QUEUE in answers["description"]
        by_type = {}
        for ref in reply["messages"]:
            assert ref["$ref"].startswith(f"{reply['channel']['$ref']}/messages/")
            message = schema_at(asyncapi, schema_at(asyncapi, ref["$ref"])["$ref"])
            by_type[message["bindings"]["amqp"]["messageType"]] = message
        assert list(by_type) == ["result", "error", "started", "heartbeat"]  # no progress
        assert (
            schema_at(asyncapi, by_type["result"]["payload"]["$ref"])["schema"]
            == (contract["definitions"]["result"])
        )
        error = schema_at(asyncapi, by_type["error"]["payload"]["$ref"])["schema"]
        assert error["required"] == ["error"]
        assert error["properties"]["error"]["required"] == ["code", "message"]
        for message in by_type.values():
            answer_headers = schema_at(asyncapi, message["headers"]["$ref"])["properties"]
            assert set(answer_headers) == {HEADER_TRACEPARENT, HEADER_TRACESTATE}
        report = gw.op("report.generate")
        report_replies = asyncapi["operations"][f"handle.{report}"]["reply"]["messages"]
        assert [r["$ref"].rpartition("/")[2] for r in report_replies] == [
            "result",
            "progress",
            "error",
            "started",
            "heartbeat",
        ]
        progress = asyncapi["components"]["messages"][f"{report}.progress"]["payload"]["$ref"]
        assert (
            schema_at(asyncapi, progress)["schema"]
            == (gw.service.contracts[report].document["definitions"]["progress"])
        )

        # A contract with inner references: they point at the definitions' components.
        kitchen = gw.op("console.kitchen")
        kitchen_request = schemas[f"{kitchen}.request"]["schema"]
        assert kitchen_request["properties"]["address"] == {
            "$ref": f"#/components/schemas/{kitchen}.address/schema"
        }
        for name, definition in gw.service.contracts[kitchen].document["definitions"].items():
            assert schemas[f"{kitchen}.{name}"]["schema"] == rewritten(definition, kitchen)

        # A light operation: its answers go to the accepting instance's own queue.
        light = gw.op("light")
        assert asyncapi["operations"][f"handle.{light}"]["bindings"]["amqp"]["deliveryMode"] == 1
        assert "gateway.replies." in asyncapi["channels"][f"answers.{light}"]["description"]

        # -- cancel notices and topics -------------------------------------------------
        cancel = asyncapi["channels"]["cancel"]
        assert cancel["address"] == CANCEL_EXCHANGE
        assert cancel["bindings"]["amqp"]["exchange"]["type"] == "fanout"
        notice = schema_at(asyncapi, cancel["messages"]["cancel"]["$ref"])
        assert notice["bindings"]["amqp"]["messageType"] == CANCEL_TYPE
        assert schema_at(asyncapi, notice["payload"]["$ref"])["required"] == ["job_id", "op"]
        assert asyncapi["operations"]["cancel"]["action"] == "receive"
        room = gw.topic("chat.room")
        topic = asyncapi["channels"][f"topics.{room}"]
        assert topic["address"] == room
        assert topic["bindings"]["amqp"]["exchange"] == {
            "name": TOPICS_EXCHANGE,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
        }
        assert asyncapi["operations"][f"publish.{room}"]["action"] == "send"
        message = schema_at(asyncapi, topic["messages"]["message"]["$ref"])
        assert (
            schema_at(asyncapi, message["payload"]["$ref"])["schema"]
            == (gw.service.topics[room].document["definitions"]["message"])
        )

        # -- a real worker gets what the document says -----------------------------------
        worker = Worker(rabbit.url)

        @worker.operation(report)
        async def generate(body: dict[str, Any], job: Any) -> dict[str, Any]:
            seen_headers.append(dict(job.headers))
            await job.progress({"done": 1, "total": 1})
            return {"title": body["title"], "sections": ["one"]}

        await run_worker(worker)
        header_schema = Draft7Validator(schemas["RequestHeaders"])
        traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
        submitted = await http.post(
            f"/v1/ops/{report}", json={"title": "t"}, headers={HEADER_TRACEPARENT: traceparent}
        )
        assert submitted.status_code == 202, submitted.text
        report_job = submitted.json()["id"]
        # math.add has no worker here: a job that stays queued, then is cancelled.
        submitted = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2})
        assert submitted.status_code == 202, submitted.text
        add_job = submitted.json()["id"]
        assert (await http.delete(f"/v1/jobs/{add_job}")).status_code == 200

        # -- the OpenAPI document: valid, and each SSE event matches its op's schema -----
        validate(spec)
        openapi = OpenApiSchemas(spec)
        stream = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
        stream_schema = stream["content"]["text/event-stream"]["schema"]
        assert {r["$ref"] for r in stream_schema["anyOf"]} == {
            f"#/components/schemas/{op}.SseEvent" for op in gw.service.contracts
        }
        components = spec["components"]["schemas"]
        for op in gw.service.contracts:
            mapping = components[f"{op}.SseEvent"]["discriminator"]["mapping"]
            assert set(mapping) == set(get_args(EventType)) == set(JOB_EVENTS)
            result = schema_at(spec, mapping["result"])["properties"]["data"]
            assert result["contentSchema"] == {"$ref": f"#/components/schemas/{op}.result"}
        kinds: dict[str, list[str]] = {}
        for job_id, op in ((report_job, report), (add_job, add)):
            async with aconnect_sse(
                http, "GET", f"/v1/jobs/{job_id}/events", params={"after": 0}
            ) as source:
                async for event in source.aiter_sse():
                    if not event.data:
                        continue  # the `retry:` block: an EventSource dispatches nothing
                    kinds.setdefault(op, []).append(event.event)
                    openapi.check_sse_event(f"{op}.SseEvent", event.event, event.id, event.data)
        assert kinds[report][0] == "queued" and kinds[report][-1] == "result"
        assert "progress" in kinds[report]
        assert kinds[add] == ["queued", "cancelled"]
        with pytest.raises(AssertionError):  # data off the contract's result
            openapi.check_sse_event(f"{add}.SseEvent", "result", "3", '{"sum": "three"}')
        topics = spec["paths"]["/v1/topics/{topic}/events"]["get"]["responses"]["200"]
        topic_schema = topics["content"]["text/event-stream"]["schema"]
        assert topic_schema["anyOf"] == [{"$ref": f"#/components/schemas/topic.{room}.SseEvent"}]
        openapi.check_sse_event(f"topic.{room}.SseEvent", "message", "7", '{"from":"a","text":"b"}')
        assert openapi.errors(f"#/components/schemas/topic.{room}.SseEvent", {"event": "x"})

    # What the worker got matches the document's request headers.
    assert seen_headers
    print(f"[asyncapi] a worker's request headers: {sorted(seen_headers[0])}")
    for got in seen_headers:
        assert not list(header_schema.iter_errors(got)), (got, header_schema.schema)


def test_snapshot_is_current() -> None:
    fresh = dump(
        build_asyncapi(
            ContractRegistry.from_directory(ROOT / "schemas" / "ops"),
            TopicRegistry.from_directory(ROOT / "schemas" / "topics"),
        )
    )
    stale = not SNAPSHOT.exists() or SNAPSHOT.read_bytes() != fresh
    assert not stale, f"{SNAPSHOT} is stale: regenerate it with `{REGENERATE}`"


def test_regenerating_the_snapshot_by_its_command(tmp_path: Path) -> None:
    """`python -m gateway.asyncapi [SCHEMAS_DIR]` prints the document of another folder."""
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "only.json").write_bytes(orjson.dumps(LIGHT))
    run = subprocess.run(
        [sys.executable, "-m", "gateway.asyncapi", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    document = orjson.loads(run.stdout)
    assert list(document["operations"]) == ["cancel", "handle.only"]
    assert run.stdout == dump(
        build_asyncapi(ContractRegistry.from_directory(tmp_path / "ops"), None)
    )
