"""Every error status of the HTTP API answers with the pinned JSON error body, and
changes nothing."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft7Validator

from tests.fault_support import store_job_ids
from tests.support import ROOT, RunningGateway

ERROR_SCHEMA = Draft7Validator(orjson.loads((ROOT / "schemas/wire/error.json").read_bytes()))


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    ERROR_SCHEMA.validate(body)
    assert body["error"]["code"] == code, body
    return body


async def test_malformed_json_is_400(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('math.add')}",
            content=b'{"a": 1,',
            headers={"content-type": "application/json"},
        )
    assert_error(r, 400, "malformed_json")


async def test_unknown_op_is_404(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        assert_error(await http.post("/v1/ops/no.such.op", json={}), 404, "unknown_op")
        assert_error(await http.get("/v1/ops/no.such.op"), 404, "unknown_op")


async def test_unknown_job_and_route_are_404(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        assert_error(await http.get("/v1/jobs/nope"), 404, "job_not_found")
        assert_error(await http.get("/v1/jobs/nope/events"), 404, "job_not_found")
        assert_error(await http.get("/v1/jobs/nope?wait=1"), 404, "job_not_found")
        assert_error(await http.get("/nowhere"), 404, "not_found")
        assert_error(await http.delete("/v1/ops"), 405, "method_not_allowed")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_is_415(gateway: RunningGateway, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('math.add')}", content=b'{"a":1,"b":2}', headers=headers
        )
    assert_error(r, 415, "unsupported_media_type")


async def test_json_suffix_media_types_are_accepted(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('math.add')}",
            content=b'{"a":1}',
            headers={"content-type": "application/merge-patch+json"},
        )
    assert_error(r, 422, "invalid_request")  # past the media type check


async def test_body_over_the_limit_is_413(gateway: RunningGateway) -> None:
    limit = gateway.settings.max_body_bytes
    big = b'{"a": 1, "b": 2, "pad": "' + b"x" * limit + b'"}'
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('echo')}",
            content=big,
            headers={"content-type": "application/json"},
        )
        assert_error(r, 413, "payload_too_large")

        async def chunks():  # no Content-Length: the limit is counted while reading
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        r = await http.post(
            f"/v1/ops/{gateway.op('echo')}",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert_error(r, 413, "payload_too_large")


async def test_schema_violation_is_422_with_pointers(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        r = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": "one", "c": 3})
    body = assert_error(r, 422, "invalid_request")
    details = body["error"]["details"]
    paths = {d["path"] for d in details}
    assert "/a" in paths  # wrong type, at its JSON pointer
    assert "" in paths  # missing "b" and unexpected "c" are errors of the root
    assert all(isinstance(d["message"], str) and d["message"] for d in details)


async def test_most_relevant_error_comes_first(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('report.generate')}", json={"title": "t", "sections": "three"}
        )
    body = assert_error(r, 422, "invalid_request")
    assert body["error"]["details"][0]["path"] == "/sections"
    assert "sections" in body["error"]["message"] or "three" in body["error"]["message"]


@pytest.mark.parametrize(
    "query", ["wait=-1", "wait=abc", "wait=nan", "wait=inf", "after=-3", "after=x", "after=1.5"]
)
async def test_bad_wait_and_after_are_400(gateway: RunningGateway, query: str) -> None:
    async with gateway.client() as http:
        accepted = await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": 1, "b": 2})
        job_id = accepted.json()["id"]
        assert_error(await http.get(f"/v1/jobs/{job_id}?{query}"), 400, "invalid_parameter")
        assert_error(await http.get(f"/v1/jobs/{job_id}/events?{query}"), 400, "invalid_parameter")


async def test_bad_input_changes_nothing(gateway: RunningGateway) -> None:
    async with gateway.client() as http:
        await http.post(f"/v1/ops/{gateway.op('math.add')}", json={"a": "x"})
        await http.post(
            f"/v1/ops/{gateway.op('math.add')}",
            content=b"{",
            headers={"content-type": "application/json"},
        )
    assert store_job_ids(gateway.settings.store_url, gateway.op("math.add")) == set()
