"""Job tokens in the Python client (issue 12): with auth on, a client that was handed a
job's `job_token` reads that job and follows its events with it (`?access_token=`), and
a client without a bearer token uses the token of a job resource it received by itself.
Against the client suites' gateway with auth on (tests/polyglot.py)."""

from __future__ import annotations

import pytest

from gateway.client import AsyncClient
from tests.polyglot import Polyglot


async def test_a_handed_job_token_opens_the_job_and_its_events(polyglot: Polyglot) -> None:
    url = polyglot.auth_gateway.url
    bearer = {"Authorization": f"Bearer {polyglot.auth_token}"}
    async with AsyncClient(url, headers=bearer) as owner, AsyncClient(url) as browser:
        job = await owner.submit("math.add", {"a": 1, "b": 2})  # no worker: stays queued
        token = job["job_token"]
        with pytest.raises(Exception) as refused:
            await browser.job(job["id"])
        assert getattr(refused.value, "status", None) == 401

        seen = await browser.job(job["id"], job_token=token)
        assert seen["id"] == job["id"] and seen["status"] == "queued"
        await owner.cancel(job["id"])
        # No token passed: the one the client was handed (and the job resource it then
        # received) serves the job's later calls.
        events = [e.type async for e in browser.events(job["id"])]
        assert events == ["queued", "cancelled"]
        assert (await browser.job(job["id"]))["status"] == "cancelled"


async def test_a_token_from_a_received_job_resource_is_used_without_a_bearer(
    polyglot: Polyglot,
) -> None:
    url = polyglot.auth_gateway.url
    bearer = {"Authorization": f"Bearer {polyglot.auth_token}"}
    async with AsyncClient(url, headers=bearer) as owner, AsyncClient(url) as other:
        job = await owner.submit("math.add", {"a": 1, "b": 2})
        await owner.cancel(job["id"])
        # A client with a bearer relies on it, not on the token it was given.
        assert "access_token" not in owner._token_query(job["id"])
        other._remember(job)  # as if it had received the job resource itself
        assert (await other.job(job["id"]))["status"] == "cancelled"
        assert [e.type async for e in other.events(job["id"], after=1)] == ["cancelled"]
        # A wrong token is refused: the token is what opens the job.
        with pytest.raises(Exception) as refused:
            await other.job(job["id"], job_token="1.bad")
        assert getattr(refused.value, "status", None) == 401
