"""What a conform run sends: the operation's contract, requests from its vectors, and the
recorded slow and error requests (the vectors file's `worker` object, or options).

It exists to turn files and flags into one checked `Plan` before anything starts, so that
a typo (an unknown operation, a recorded request the contract refuses) is a clear setup
error (exit 2), not a failing case that blames the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from gateway.conform import SetupError
from gateway.contracts import Contract, ContractRegistry, validation_details
from gateway.errors import ContractError
from gateway.types import JSON

__all__ = ["MAX_VALID_REQUESTS", "Claims", "Plan", "RecordedError", "Sample", "default_vectors"]

Claims = Literal["quick", "long"]
MAX_VALID_REQUESTS = 5
"""Valid request vectors sent by the `answers` case: enough to see a pattern, quickly."""


@dataclass(frozen=True, slots=True)
class Sample:
    """A request body and what to call it in the report."""

    label: str
    body: JSON


@dataclass(frozen=True, slots=True)
class RecordedError:
    """A valid request the worker must fail, and the error code it must fail with."""

    request: JSON
    code: str


@dataclass(frozen=True, slots=True)
class Plan:
    op: str
    contract: Contract
    claims: Claims
    vectors: Path
    valid: tuple[Sample, ...]
    """The first valid `request` vectors (at most `MAX_VALID_REQUESTS`)."""
    invalid: Sample | None
    """The first invalid `request` vector, for `reject`."""
    slow: JSON | None
    error: RecordedError | None
    timeout: float
    start_timeout: float
    lease_seconds: float

    @property
    def long(self) -> bool:
        return self.claims == "long"

    @property
    def heartbeat_interval(self) -> float:
        """What docs/workers.md asks of a long job: an answer every third of the lease."""
        return self.lease_seconds / 3

    @property
    def cancel_grace(self) -> float:
        """How long a worker may still answer for a job after its cancel notice was sent."""
        return 0.5 + self.heartbeat_interval

    @property
    def sends_slow(self) -> bool:
        """The slow request is sent when a claimed case looks at it: the long cases, or
        `progress` (only with a contract that has progress)."""
        return self.slow is not None and (self.long or self.contract.progress is not None)


def default_vectors(contracts_dir: Path, op: str) -> Path:
    """The op's vectors: `<contracts>/../vectors/<op>.json` (the repository's layout,
    schemas/ops beside schemas/vectors), else `<contracts>/vectors/<op>.json`."""
    beside = contracts_dir.parent / "vectors" / f"{op}.json"
    inside = contracts_dir / "vectors" / f"{op}.json"
    return inside if not beside.exists() and inside.exists() else beside


def load_plan(
    *,
    op: str,
    contracts_dir: Path,
    vectors: Path | None,
    claims: Claims,
    slow_request: str | None,
    error_request: str | None,
    error_code: str | None,
    timeout: float,
    start_timeout: float,
    lease_seconds: float,
) -> Plan:
    """The checked plan; `SetupError` naming what is wrong."""
    try:
        registry = ContractRegistry.from_directory(contracts_dir)
    except ContractError as exc:
        raise SetupError(str(exc)) from exc
    if op not in registry:
        known = ", ".join(registry) or "none"
        raise SetupError(f"no contract for {op} in {contracts_dir} (operations: {known})")
    contract = registry[op]
    vectors = vectors or default_vectors(contracts_dir, op)
    document = _read_vectors(vectors)
    listed = document.get("cases")
    if not isinstance(listed, list):
        raise SetupError(f"{vectors}: not a vectors file (no `cases` list)")
    cases = [c for c in listed if isinstance(c, dict)]
    requests = [c for c in cases if c.get("definition") == "request"]
    valid = tuple(
        Sample(repr(c.get("description", "a valid request")), c.get("data"))
        for c in requests
        if c.get("valid") is True
    )[:MAX_VALID_REQUESTS]
    if not valid:
        raise SetupError(f"{vectors}: no valid `request` case to send")
    for sample in valid:
        _check_valid(contract, sample.body, f"{vectors}: the vector {sample.label}")
    invalid = next(
        (
            Sample(repr(c.get("description", "an invalid request")), c.get("data"))
            for c in requests
            if c.get("valid") is False
        ),
        None,
    )
    if invalid is not None and contract.request.is_valid(invalid.body):
        raise SetupError(f"{vectors}: the vector {invalid.label} is marked invalid, but it is not")
    recorded = document.get("worker", {})
    if not isinstance(recorded, dict):
        raise SetupError(f"{vectors}: `worker` must be an object")
    slow = _json_option("--slow-request", slow_request) if slow_request else recorded.get("slow")
    if slow is not None:
        _check_valid(contract, slow, "the slow request")
    return Plan(
        op=op,
        contract=contract,
        claims=claims,
        vectors=vectors,
        valid=valid,
        invalid=invalid,
        slow=slow,
        error=_recorded_error(contract, vectors, recorded, error_request, error_code),
        timeout=timeout,
        start_timeout=start_timeout,
        lease_seconds=lease_seconds,
    )


def _read_vectors(path: Path) -> dict[str, JSON]:
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise SetupError(f"no vectors file {path}: give --vectors FILE") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SetupError(f"{path}: cannot read the vectors: {exc}") from exc
    if not isinstance(document, dict):
        raise SetupError(f"{path}: not a vectors file (an object with `cases`)")
    return document


def _recorded_error(
    contract: Contract,
    vectors: Path,
    recorded: dict[str, JSON],
    error_request: str | None,
    error_code: str | None,
) -> RecordedError | None:
    if error_request is not None or error_code is not None:
        if error_request is None or error_code is None:
            raise SetupError("--error-request and --error-code go together")
        request = _json_option("--error-request", error_request)
        code = error_code
    else:
        entry = recorded.get("error")
        if entry is None:
            return None
        if (
            not isinstance(entry, dict)
            or "request" not in entry
            or not isinstance(entry.get("code"), str)
        ):
            raise SetupError(f'{vectors}: `worker.error` must be {{"request": ..., "code": "..."}}')
        request, code = entry["request"], entry["code"]
    _check_valid(contract, request, "the error request")
    return RecordedError(request, code)


def _json_option(name: str, text: str) -> JSON:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SetupError(f"{name}: not JSON ({exc})") from exc


def _check_valid(contract: Contract, body: JSON, what: str) -> None:
    details = validation_details(contract.request.iter_errors(body))
    if details:
        raise SetupError(
            f"{what} does not match the contract of {contract.op}: "
            f"{details[0]['path'] or '/'}: {details[0]['message']}"
        )
