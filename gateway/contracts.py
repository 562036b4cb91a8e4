"""Operation contracts: `schemas/ops/<op>.json`, loaded and compiled once at start-up.

Each file is a draft-07 JSON Schema whose `definitions` hold `request` (required),
`result` (required) and `progress` (optional); gateway settings live under `x-gateway`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match, relevance

from gateway.errors import ContractError, InvalidRequest
from gateway.types import JSON, JSONObject

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
OP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_DETAILS = 20

Durability = Literal["durable", "light"]

# What `x-gateway` may hold; anything else is a typo and stops start-up.
SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "durability": {"enum": ["durable", "light"]},
        "max_queue_length": {"type": "integer", "minimum": 1},
        "deadline_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 31622400},
        "lease_seconds": {"type": "number", "exclusiveMinimum": 0},
        "retention_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}
_settings_validator = Draft7Validator(SETTINGS_SCHEMA)


@dataclass(frozen=True, slots=True)
class OperationSettings:
    """The contract's `x-gateway` object with defaults filled in."""

    description: str = ""
    durability: Durability = "durable"
    max_queue_length: int = 100_000
    deadline_seconds: float | None = None
    """Default deadline of a job; a request may set its own (X-Deadline-Seconds)."""
    lease_seconds: float = 120.0
    """A running job whose worker is silent this long fails with `worker_lost`."""
    retention_seconds: float = 7 * 24 * 3600.0
    """Finished jobs are purged this long after they ended."""

    @classmethod
    def from_json(cls, raw: JSONObject) -> OperationSettings:
        return cls(**raw)

    def to_json(self) -> JSONObject:
        return {
            "description": self.description,
            "durability": self.durability,
            "max_queue_length": self.max_queue_length,
            "deadline_seconds": self.deadline_seconds,
            "lease_seconds": self.lease_seconds,
            "retention_seconds": self.retention_seconds,
        }


def json_pointer(path: Iterator[Any] | Any) -> str:
    """RFC 6901 pointer for a jsonschema error path."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return "".join("/" + p for p in parts)


def validation_details(errors: list[ValidationError]) -> list[JSONObject]:
    """Most relevant error first (jsonschema's best_match), then the rest by relevance."""
    if not errors:
        return []
    best = best_match(errors)
    rest = sorted((e for e in errors if e is not best), key=relevance, reverse=True)
    return [
        {"path": json_pointer(e.absolute_path), "message": e.message}
        for e in [best, *rest][:MAX_DETAILS]
    ]


@dataclass(frozen=True, slots=True)
class Contract:
    op: str
    path: Path
    document: JSONObject
    settings: OperationSettings
    request: Draft7Validator
    result: Draft7Validator
    progress: Draft7Validator | None

    def validate_request(self, body: JSON) -> None:
        if self.request.is_valid(body):
            return
        details = validation_details(list(self.request.iter_errors(body)))
        raise InvalidRequest(
            f"request does not match the contract of {self.op}: {details[0]['message']}",
            details=details,
        )

    def result_errors(self, result: JSON) -> list[JSONObject]:
        if self.result.is_valid(result):
            return []
        return validation_details(list(self.result.iter_errors(result)))

    def progress_errors(self, progress: JSON) -> list[JSONObject]:
        if self.progress is None or self.progress.is_valid(progress):
            return []
        return validation_details(list(self.progress.iter_errors(progress)))


def _validator_for(document: JSONObject, definition: str) -> Draft7Validator:
    # A root that refers to one definition resolves the document's inner
    # `#/definitions/...` references exactly as clients' validators do.
    root: JSONObject = {
        "$ref": f"#/definitions/{definition}",
        "definitions": document["definitions"],
    }
    return Draft7Validator(root)


def load_contract(path: Path) -> Contract:
    op = path.name.removesuffix(".json")
    where = str(path)
    if not OP_NAME.match(op) or op.startswith("amq."):
        raise ContractError(f"{where}: {op!r} is not a valid operation name")
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ContractError(f"{where}: a contract is a JSON object")
    declared = document.get("$schema", DRAFT_07)
    if declared.rstrip("#") != DRAFT_07.rstrip("#"):
        raise ContractError(f"{where}: contracts are draft-07 JSON Schema, not {declared}")
    try:
        Draft7Validator.check_schema(document)
    except SchemaError as exc:
        raise ContractError(
            f"{where}: invalid JSON Schema at {json_pointer(exc.path)}: {exc.message}"
        ) from exc
    definitions = document.get("definitions")
    if not isinstance(definitions, dict):
        raise ContractError(f"{where}: missing `definitions`")
    for required in ("request", "result"):
        if required not in definitions:
            raise ContractError(f"{where}: missing `definitions.{required}`")
    raw_settings = document.get("x-gateway", {})
    settings_error = best_match(_settings_validator.iter_errors(raw_settings))
    if settings_error is not None:
        raise ContractError(
            f"{where}: x-gateway{json_pointer(settings_error.absolute_path)}: "
            f"{settings_error.message}"
        )
    try:
        return Contract(
            op=op,
            path=path,
            document=document,
            settings=OperationSettings.from_json(raw_settings),
            request=_validator_for(document, "request"),
            result=_validator_for(document, "result"),
            progress=_validator_for(document, "progress") if "progress" in definitions else None,
        )
    except Exception as exc:  # e.g. an unresolvable $ref found while compiling
        raise ContractError(f"{where}: {exc}") from exc


class ContractRegistry(Mapping[str, Contract]):
    """All operations, by name."""

    def __init__(self, contracts: list[Contract]) -> None:
        self._by_op = {c.op: c for c in sorted(contracts, key=lambda c: c.op)}

    @classmethod
    def from_directory(cls, directory: Path | str) -> ContractRegistry:
        directory = Path(directory)
        if not directory.is_dir():
            raise ContractError(f"{directory}: contracts directory not found")
        contracts = [load_contract(p) for p in sorted(directory.glob("*.json"))]
        if not contracts:
            raise ContractError(f"{directory}: no contracts (<op>.json files) found")
        return cls(contracts)

    def __getitem__(self, op: str) -> Contract:
        return self._by_op[op]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_op)

    def __len__(self) -> int:
        return len(self._by_op)
