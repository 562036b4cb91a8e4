"""Schemathesis against the gateway's own /openapi.json, on a live gateway: no 5xx, and
every error is the pinned JSON error body. Bounded: a few dozen examples per operation,
valid and invalid ones, with `wait` capped so no request is held."""

from __future__ import annotations

import asyncio
import contextlib

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode

from tests.fault_support import ERROR_SCHEMA
from tests.support import make_settings, serve_gateway

EXAMPLES = 25


def fuzz(base_url: str, document: dict) -> dict[str, int]:
    """Run every operation of the document in both generation modes; the statuses seen."""
    schema = schemathesis.openapi.from_dict(document)
    seen: dict[str, int] = {}
    failures: list[str] = []

    def run(session: requests.Session, operation: APIOperation, mode: GenerationMode) -> None:
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Case) -> None:
            response = case.call(base_url=base_url, session=session, timeout=10)
            seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
            where = f"{case.method} {case.formatted_path} ({mode.value})"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            if response.status_code >= 400:
                content_type = {k.lower(): v for k, v in response.headers.items()}.get(
                    "content-type", [""]
                )
                if not content_type[0].startswith("application/json"):
                    failures.append(f"{where}: {response.status_code} not JSON")
                    return
                errors = list(ERROR_SCHEMA.iter_errors(response.json()))
                if errors:
                    failures.append(f"{where}: error body {errors[0].message}")

        # Unsatisfiable: e.g. no invalid value exists for a free-form string parameter.
        with contextlib.suppress(Unsatisfiable):
            check()

    with requests.Session() as session:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run(session, result.ok(), mode)
    assert not failures, failures[:20]
    return seen


async def test_openapi_fuzz(rabbit, tmp_path) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url, max_wait_seconds=0.1)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        document = (await http.get("/openapi.json")).json()
        # The client side runs in a thread: the gateway serves on this event loop.
        seen = await asyncio.wait_for(asyncio.to_thread(fuzz, gw.url, document), 120)
        assert (await http.get("/healthz")).status_code == 200
    version = schemathesis.SCHEMATHESIS_VERSION
    print(f"\n[fuzz] schemathesis {version}: statuses {dict(sorted(seen.items()))}")
    assert sum(seen.values()) > 100
