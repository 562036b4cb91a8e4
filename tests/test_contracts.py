"""Contracts load once at start-up; a broken one stops start-up naming the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from openapi_spec_validator import validate

from gateway.contracts import ContractRegistry
from gateway.errors import ContractError, InvalidRequest
from gateway.openapi import build_openapi
from tests.support import EXAMPLE_CONTRACTS

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
