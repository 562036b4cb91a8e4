"""The shared conformance vectors in schemas/vectors, as the Python side sees them."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft7Validator

from gateway.contracts import ContractRegistry
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
    if schema.startswith("ops/"):
        # Contracts are validated the way the gateway does it.
        contract = ContractRegistry.from_directory(path.parent)[path.stem]
        validator = {
            "request": contract.request,
            "result": contract.result,
            "progress": contract.progress,
        }[str(case["definition"])]
        assert validator is not None
    else:
        validator = Draft7Validator(orjson.loads(path.read_bytes()))
    assert validator.is_valid(case["data"]) is case["valid"]


def test_every_example_contract_has_vectors() -> None:
    covered = {orjson.loads(p.read_bytes())["schema"] for p in SCHEMA_FILES}
    contracts = {f"ops/{p.name}" for p in (ROOT / "schemas/ops").glob("*.json")}
    wire = {f"wire/{p.name}" for p in (ROOT / "schemas/wire").glob("*.json")}
    assert contracts | wire <= covered


def test_vectors_have_both_verdicts() -> None:
    for path in SCHEMA_FILES:
        verdicts = {c["valid"] for c in orjson.loads(path.read_bytes())["cases"]}
        assert verdicts == {True, False}, path.name
