"""The shared conformance vectors in schemas/vectors, as the Python side sees them."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft7Validator

from gateway.client import local_validator
from gateway.contracts import ContractRegistry, load_contract, validation_details
from gateway.topic_contracts import TopicRegistry
from tests.support import ROOT

VECTORS = ROOT / "schemas" / "vectors"
SCHEMA_FILES = sorted(p for p in VECTORS.glob("*.json") if p.name != "sse-frames.json")


def schema_cases() -> list[object]:
    cases = []
    for path in SCHEMA_FILES:
        doc = orjson.loads(path.read_bytes())
        for case in doc["cases"]:
            cases.append(
                pytest.param(doc["schema"], case, id=f"{path.stem}: {case['description']}")
            )
    return cases


@pytest.mark.parametrize(("schema", "case"), schema_cases())
def test_schema_vector(schema: str, case: dict[str, object]) -> None:
    path = ROOT / "schemas" / schema
    document = orjson.loads(path.read_bytes())
    if schema.startswith("topics/"):
        # Topic contracts: one definition, `message`, validated the way the gateway does.
        topic = TopicRegistry.from_directory(path.parent)[path.stem]
        assert case["definition"] == "message"
        assert topic.message.is_valid(case["data"]) is case["valid"]
        local = local_validator(topic.document, "message")
        expected = case.get("details", [])
        assert [d["path"] for d in topic.message_errors(case["data"])] == expected
        assert [d["path"] for d in validation_details(local.iter_errors(case["data"]))] == expected
        return
    if schema.startswith("ops/"):
        # Contracts are validated the way the gateway does it.
        contract = ContractRegistry.from_directory(path.parent)[path.stem]
    elif "definition" in case:
        contract = load_contract(path)  # contract-shaped, not an operation
    if "definition" in case:
        validator = {
            "request": contract.request,
            "result": contract.result,
            "progress": contract.progress,
        }[str(case["definition"])]
        assert validator is not None
        # The Python client validates the contract as served, on its own.
        local = local_validator(contract.document, str(case["definition"]))
    else:
        validator = local = Draft7Validator(document)
    assert validator.is_valid(case["data"]) is case["valid"]
    # Paths and their order, as the gateway reports them (and the client, locally).
    expected = case.get("details", [])
    for checker in (validator, local):
        details = validation_details(checker.iter_errors(case["data"]))
        assert [d["path"] for d in details] == expected


def test_invalid_vectors_pin_their_details() -> None:
    for path in SCHEMA_FILES:
        for case in orjson.loads(path.read_bytes())["cases"]:
            assert ("details" in case) is not case["valid"], (path.name, case["description"])


def test_every_example_contract_has_vectors() -> None:
    covered = {orjson.loads(p.read_bytes())["schema"] for p in SCHEMA_FILES}
    contracts = {f"ops/{p.name}" for p in (ROOT / "schemas/ops").glob("*.json")}
    wire = {f"wire/{p.name}" for p in (ROOT / "schemas/wire").glob("*.json")}
    assert contracts | wire <= covered


def test_vectors_have_both_verdicts() -> None:
    for path in SCHEMA_FILES:
        verdicts = {c["valid"] for c in orjson.loads(path.read_bytes())["cases"]}
        assert verdicts == {True, False}, path.name
