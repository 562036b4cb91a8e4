"""Contracts load once at start-up; a broken one stops start-up naming the file."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft7Validator
from openapi_spec_validator import validate

from gateway.contracts import ContractRegistry
from gateway.errors import ContractError, InvalidRequest
from gateway.openapi import build_openapi
from gateway.topic_contracts import TopicRegistry
from tests.support import EXAMPLE_CONTRACTS, ROOT, free_port, make_settings, serve_gateway

GOOD = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "point": {"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}},
        "request": {"type": "object", "properties": {"at": {"$ref": "#/definitions/point"}}},
        "result": {"type": "number"},
    },
}


def write(directory: Path, name: str, document: object) -> Path:
    path = directory / name
    path.write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))
    return path


def test_examples_load() -> None:
    registry = ContractRegistry.from_directory(EXAMPLE_CONTRACTS)
    assert {"math.add", "report.generate", "echo"} <= set(registry)
    assert registry["report.generate"].progress is not None
    assert registry["math.add"].settings.durability == "durable"


def test_inner_references_resolve(tmp_path: Path) -> None:
    write(tmp_path, "geo.locate.json", GOOD)
    contract = ContractRegistry.from_directory(tmp_path)["geo.locate"]
    contract.validate_request({"at": {"x": 1}})
    with pytest.raises(InvalidRequest) as caught:
        contract.validate_request({"at": {"x": "far"}})
    assert caught.value.details[0]["path"] == "/at/x"


@pytest.mark.parametrize(
    ("name", "document", "problem"),
    [
        ("bad.json", b"{not json", "not valid JSON"),
        ("bad.json", [1, 2], "JSON object"),
        ("bad.json", {"definitions": {"result": {}}}, "definitions.request"),
        ("bad.json", {"definitions": {"request": {}}}, "definitions.result"),
        (
            "bad.json",
            {**GOOD, "$schema": "https://json-schema.org/draft/2020-12/schema"},
            "draft-07",
        ),
        (
            "bad.json",
            {**GOOD, "definitions": {**GOOD["definitions"], "request": {"type": 5}}},
            "invalid JSON Schema",
        ),
        ("bad.json", {**GOOD, "x-gateway": {"durabilty": "light"}}, "durabilty"),
        ("bad.json", {**GOOD, "x-gateway": {"max_queue_length": 0}}, "max_queue_length"),
        ("amq.bad.json", GOOD, "not a valid operation name"),
    ],
)
def test_broken_contract_names_file_and_problem(
    tmp_path: Path, name: str, document: object, problem: str
) -> None:
    write(tmp_path, "fine.json", GOOD)
    path = write(tmp_path, name, document)
    with pytest.raises(ContractError) as caught:
        ContractRegistry.from_directory(tmp_path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_cli_refuses_to_start_with_a_broken_contract(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", {"definitions": {}})
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--contracts", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert str(path) in run.stderr and "definitions.request" in run.stderr


def test_empty_contracts_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contracts"):
        ContractRegistry.from_directory(tmp_path)


def test_openapi_is_valid_and_covers_every_operation() -> None:
    registry = ContractRegistry.from_directory(EXAMPLE_CONTRACTS)
    spec = build_openapi(registry)
    validate(spec)
    for op in registry:
        post = spec["paths"][f"/v1/ops/{op}"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{op}.request"
    assert "Job" in spec["components"]["schemas"]


def test_openapi_covers_every_topic_contract() -> None:
    topics = TopicRegistry.from_directory(EXAMPLE_CONTRACTS.parent / "topics")
    spec = build_openapi(ContractRegistry.from_directory(EXAMPLE_CONTRACTS), topics)
    validate(spec)
    assert topics
    for name in topics:
        post = spec["paths"][f"/v1/topics/{name}"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/topic.{name}.message"
    assert "/v1/topics/{topic}/events" in spec["paths"]


def test_openapi_rewrites_inner_references(tmp_path: Path) -> None:
    write(tmp_path, "geo.locate.json", GOOD)
    spec = build_openapi(ContractRegistry.from_directory(tmp_path))
    validate(spec)
    request = spec["components"]["schemas"]["geo.locate.request"]
    assert request["properties"]["at"]["$ref"] == "#/components/schemas/geo.locate.point"


async def test_openapi_served(gateway) -> None:
    async with gateway.client() as http:
        spec = (await http.get("/openapi.json")).json()
        ops = (await http.get("/v1/ops")).json()["ops"]
        contract = (await http.get(f"/v1/ops/{gateway.op('math.add')}")).json()
    assert f"/v1/ops/{gateway.op('math.add')}" in spec["paths"]
    assert {o["op"] for o in ops} == set(gateway.ops.values())
    assert all(o["href"] == f"/v1/ops/{o['op']}" for o in ops)
    assert contract["definitions"]["request"]["required"] == ["a", "b"]


# -- references: resolved at load time from the contracts folder, nothing fetched ---------

MONEY = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "amount": {"type": "number"},
        "money": {
            "type": "object",
            "required": ["amount"],
            "properties": {
                "amount": {"$ref": "#/definitions/amount"},
                "parts": {"type": "array", "items": {"$ref": "#/definitions/money"}},
            },
        },
    },
}


def refers_to(ref: str) -> dict[str, object]:
    """A contract whose request's `price` is `{"$ref": ref}`."""
    return {
        "definitions": {
            "request": {"type": "object", "properties": {"price": {"$ref": ref}}},
            "result": {"type": "number"},
        }
    }


def shared_folder(directory: Path) -> Path:
    (directory / "_shared").mkdir(parents=True)
    write(directory / "_shared", "common.json", MONEY)
    return directory


def test_remote_ref_is_refused_at_load_and_never_fetched(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        ref = f"http://127.0.0.1:{listener.getsockname()[1]}/money.json#/definitions/money"
        path = write(tmp_path, "pay.json", refers_to(ref))
        with pytest.raises(ContractError) as caught:
            ContractRegistry.from_directory(tmp_path)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: the reference was not fetched
    message = str(caught.value)
    assert str(path) in message and ref in message
    assert "only files of the contracts folder" in message


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("https://slow.example/x.json", "only files of the contracts folder"),
        ("file:///etc/passwd", "only files of the contracts folder"),
        ("../outside.json", "only files of the contracts folder"),
        ("_shared/missing.json#/definitions/money", "no such file in the contracts folder"),
        ("_shared/common.json#/definitions/nope", "no such location"),
        ("#/definitions/nope", "no such location"),
    ],
)
def test_unresolvable_ref_names_file_and_ref(tmp_path: Path, ref: str, problem: str) -> None:
    folder = shared_folder(tmp_path / "contracts")
    write(tmp_path, "outside.json", MONEY)  # exists, but outside the folder
    write(folder, "fine.json", GOOD)
    path = write(folder, "pay.json", refers_to(ref))
    with pytest.raises(ContractError) as caught:
        ContractRegistry.from_directory(folder)
    message = str(caught.value)
    assert str(path) in message and repr(ref) in message and problem in message


def test_broken_ref_inside_a_shared_file_is_refused(tmp_path: Path) -> None:
    shared_folder(tmp_path)
    broken = {"definitions": {"money": {"$ref": "https://slow.example/money.json"}}}
    write(tmp_path, "_broken.json", broken)
    path = write(tmp_path, "pay.json", refers_to("_broken.json#/definitions/money"))
    with pytest.raises(ContractError) as caught:
        ContractRegistry.from_directory(tmp_path)
    message = str(caught.value)
    assert str(path) in message and "https://slow.example/money.json" in message
    assert "(in _broken.json)" in message


def test_shared_definitions_validate_and_are_bundled(tmp_path: Path) -> None:
    shared_folder(tmp_path)
    write(tmp_path, "pay.json", refers_to("_shared/common.json#/definitions/money"))
    write(tmp_path, "geo.locate.json", GOOD)
    registry = ContractRegistry.from_directory(tmp_path)
    assert set(registry) == {"pay", "geo.locate"}  # the shared file is no operation
    pay = registry["pay"]
    pay.validate_request({"price": {"amount": 1, "parts": [{"amount": 2}]}})
    with pytest.raises(InvalidRequest) as caught:
        pay.validate_request({"price": {"amount": 1, "parts": [{"amount": "2"}]}})
    assert caught.value.details[0]["path"] == "/price/parts/0/amount"
    # What clients fetch (GET /v1/ops/pay) is self-contained: a plain validator, with no
    # registry and no folder, judges it the same way.
    text = orjson.dumps(pay.document).decode()
    assert "common.json" not in text
    alone = Draft7Validator({"$ref": "#/definitions/request", **pay.document})
    assert alone.is_valid({"price": {"amount": 1, "parts": [{"amount": 2}]}})
    assert not alone.is_valid({"price": {"amount": 1, "parts": [{"amount": "2"}]}})
    # A contract without references to other files is served exactly as written.
    assert registry["geo.locate"].document == GOOD
    validate(build_openapi(registry))


def test_shared_file_addressed_by_its_id(tmp_path: Path) -> None:
    (tmp_path / "_types").mkdir()
    write(tmp_path / "_types", "money.json", {**MONEY, "$id": "urn:example:money"})
    write(tmp_path, "pay.json", refers_to("urn:example:money#/definitions/money"))
    pay = ContractRegistry.from_directory(tmp_path)["pay"]
    pay.validate_request({"price": {"amount": 3}})
    with pytest.raises(InvalidRequest):
        pay.validate_request({"price": {"amount": "3"}})


async def test_gateway_serves_a_contract_with_shared_definitions(rabbit, tmp_path: Path) -> None:
    settings, ops = make_settings(
        tmp_path, rabbit.url, {"pay": refers_to("_shared/common.json#/definitions/money")}
    )
    shared_folder(settings.contracts_dir)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        document = (await http.get(f"/v1/ops/{gw.op('pay')}")).json()
        bad = await http.post(f"/v1/ops/{gw.op('pay')}", json={"price": {"amount": "x"}})
        good = await http.post(f"/v1/ops/{gw.op('pay')}", json={"price": {"amount": 5}})
        listed = {o["op"] for o in (await http.get("/v1/ops")).json()["ops"]}
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["path"] == "/price/amount"
    assert good.status_code == 202, good.text
    assert set(listed) == set(ops.values())  # no `_shared` operation
    alone = Draft7Validator({"$ref": "#/definitions/request", **document})
    assert alone.is_valid({"price": {"amount": 5}}) and not alone.is_valid({"price": {}})


def test_cli_refuses_a_remote_ref_at_once(tmp_path: Path) -> None:
    ref = "http://slow.example/money.json"
    path = write(tmp_path, "pay.json", refers_to(ref))
    port, nobody = free_port(), free_port()  # nothing listens on `nobody`
    started = time.monotonic()
    run = subprocess.run(
        [
            str(ROOT / ".venv/bin/gateway"),
            "serve",
            "--contracts",
            str(tmp_path),
            "--port",
            str(port),
            "--broker",
            f"amqp://guest:guest@127.0.0.1:{nobody}/",
            "--store",
            f"sqlite:///{tmp_path / 'store.sqlite3'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    print(f"\n[remote $ref] gateway serve exited {run.returncode} in {took:.2f}s: {run.stderr}")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and ref in lines[0], run.stderr
    assert took < 15
    assert not (tmp_path / "store.sqlite3").exists()  # it stopped before opening anything
