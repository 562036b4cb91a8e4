"""Worker answers are capped (issue 11, point 6): an answer over `max_answer_bytes` fails its
job with `answer_too_large` before its body is parsed or stored; one within the cap comes
back intact. Before the cap, a 50 MB answer was accepted and stored twice (the job's result
and its result event), so these tests failed: the oversized jobs succeeded."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import orjson

from gateway.config import Settings
from tests.support import RabbitNode, RunningGateway, make_settings, serve_gateway
from tests.test_round_trip import raw_worker, reply

CAP = 1 << 20  # 1 MiB, for the tests with a small cap
EMPTY = len(b'{"blob":""}')

Sent = dict[str, bytes]
"""What the worker answered, by job id: the bytes a client must get back."""


def body_of(size: int) -> bytes:
    """A JSON object of exactly `size` bytes, of random text (no copy can pass for it)."""
    text = secrets.token_urlsafe(size)[: size - EMPTY]
    body = orjson.dumps({"blob": text})
    assert len(body) == size
    return body


@asynccontextmanager
async def sizing_worker(gateway: RunningGateway, rabbit_url: str) -> AsyncIterator[Sent]:
    """A worker (plain aio-pika, no gateway code) for `echo`: a request `{"size": n,
    "type": t}` gets an answer of type `t` whose body is n bytes, then a small result."""
    sent: Sent = {}

    async def answer(
        message: aio_pika.abc.AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel
    ) -> None:
        request = orjson.loads(message.body)
        body = body_of(request["size"])
        assert message.correlation_id is not None
        sent[message.correlation_id] = body
        await reply(channel, message, body, type=request["type"])
        if request["type"] != "result":
            # A result after an oversized progress or error changes nothing: the job
            # failed at the oversized answer (one job's answers are stored in order).
            await reply(channel, message, b'{"late": true}', type="result")
        await message.ack()

    connection = await raw_worker(rabbit_url, gateway.op("echo"), answer)
    try:
        yield sent
    finally:
        await connection.close()


async def call(gateway: RunningGateway, size: int, type: str = "result") -> dict[str, object]:
    """Submit an echo job answered with `size` bytes of `type`; the job once it ended."""
    async with gateway.client() as http:
        r = await http.post(
            f"/v1/ops/{gateway.op('echo')}?wait=60", json={"size": size, "type": type}
        )
    assert r.status_code == 200, r.text
    job: dict[str, object] = r.json()
    return job


def assert_too_large(job: dict[str, object], kind: str, size: int, limit: int) -> None:
    assert job["status"] == "failed", {k: v for k, v in job.items() if k != "result"}
    assert "result" not in job
    error = job["error"]
    assert isinstance(error, dict) and error["code"] == "answer_too_large"
    message = error["message"]
    # The sizes and the limit, never the body.
    assert f"{kind} answer is {size} bytes" in message and f"limit of {limit} bytes" in message
    assert "blob" not in message and len(message) < 300
    assert set(error) == {"code", "message"}


async def events_of(gateway: RunningGateway, job_id: str) -> list[dict[str, object]]:
    async with gateway.client() as http:
        r = await http.get(f"/v1/jobs/{job_id}/events")
    assert r.status_code == 200, r.text
    events: list[dict[str, object]] = r.json()["events"]
    return events


async def answers_counted(gateway: RunningGateway, outcome: str) -> float:
    async with gateway.client() as http:
        text = (await http.get("/metrics")).text
    line = f'gateway_answers_total{{outcome="{outcome}"}} '
    return sum(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line))


@asynccontextmanager
async def capped_gateway(
    rabbit: RabbitNode, tmp_path: Path, **overrides: object
) -> AsyncIterator[RunningGateway]:
    settings, ops = make_settings(tmp_path, rabbit.url, None, **overrides)
    async with serve_gateway(settings, ops) as gateway:
        yield gateway


async def test_answers_over_the_cap_fail_their_job(rabbit: RabbitNode, tmp_path: Path) -> None:
    async with (
        capped_gateway(rabbit, tmp_path, max_answer_bytes=CAP) as gateway,
        sizing_worker(gateway, rabbit.url) as sent,
    ):
        for kind in ("result", "progress", "error"):
            job = await call(gateway, 2 * CAP, kind)
            assert_too_large(job, kind, 2 * CAP, CAP)
            events = await events_of(gateway, str(job["id"]))
            assert [e["type"] for e in events] == ["queued", "error"]
            assert events[-1]["data"] == job["error"]
        # At the cap exactly: served, and the result comes back byte for byte, in the job
        # and as its result event (read from the job's row: see tests/test_store.py).
        job = await call(gateway, CAP)
        assert job["status"] == "succeeded", job.get("error")
        assert orjson.dumps(job["result"]) == sent[str(job["id"])]
        events = await events_of(gateway, str(job["id"]))
        assert [e["type"] for e in events] == ["queued", "result"]
        assert orjson.dumps(events[-1]["data"]) == sent[str(job["id"])]
        # One byte over is over.
        assert_too_large(await call(gateway, CAP + 1), "result", CAP + 1, CAP)
        assert await answers_counted(gateway, "too_large") == 4
        assert await answers_counted(gateway, "result") == 1


def store_size(settings: Settings) -> int:
    """The SQLite store's bytes on disk: the database file and its write-ahead log."""
    path = Path(settings.store_url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_a_50_mb_answer_fails_under_the_default_cap_and_is_not_stored(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    size = 50_000_000
    async with (
        capped_gateway(rabbit, tmp_path) as gateway,
        sizing_worker(gateway, rabbit.url) as sent,
    ):
        limit = gateway.settings.max_answer_bytes
        assert limit == Settings().max_answer_bytes == 8 << 20
        before = store_size(gateway.settings)
        started = time.monotonic()
        job = await call(gateway, size)
        took = time.monotonic() - started
        grown = store_size(gateway.settings) - before
        assert len(sent[str(job["id"])]) == size
        # Still serving, and answers of ordinary size still succeed.
        ordinary = await call(gateway, 1000)
    print(
        f"\n[answer cap] a {size}-byte answer failed its job in {took:.2f}s; "
        f"the store grew by {grown} bytes"
    )
    assert_too_large(job, "result", size, limit)
    assert grown < 1 << 20, grown  # the job and its two small events, not 50 MB (or 100)
    assert ordinary["status"] == "succeeded"
