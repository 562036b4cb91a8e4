"""Hostile input, over HTTP and over AMQP: each gets a 4xx with the JSON error body (or a
sane, documented answer), never a 5xx, and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import orjson
import pytest

from gateway.wire import ANSWERS_QUEUE
from tests.fault_support import (
    ERROR_SCHEMA,
    assert_contiguous,
    assert_error_body,
    events_of,
    follow_to_end,
)
from tests.support import RabbitNode, RunningGateway, make_settings, serve_gateway
from tests.test_round_trip import adder

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
async def hostile(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningGateway, str]]:
    """One gateway for the whole table, in a virtual host of its own (its answers queue is
    flooded here), with a worker for `math.add`; and a job that stays queued."""
    url = rabbit.add_vhost("hostile-" + secrets.token_hex(3))
    settings, ops = make_settings(tmp_path_factory.mktemp("hostile"), url)
    async with serve_gateway(settings, ops) as gw:
        serving = asyncio.create_task(adder(gw, url).serve())
        async with gw.client() as http:
            queued = await http.post(f"/v1/ops/{gw.op('report.generate')}", json={"title": "T"})
            assert queued.status_code == 202
        try:
            yield gw, queued.json()["id"]
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def still_serving(gw: RunningGateway) -> None:
    """A normal job still goes through, promptly."""
    async with gw.client() as http, asyncio.timeout(10):
        r = await http.post(f"/v1/ops/{gw.op('math.add')}?wait=9", json={"a": 2, "b": 3})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"sum": 5}


# -- the HTTP table ---------------------------------------------------------------------


@dataclass
class Hostile:
    name: str
    method: str
    path: str  # {add}, {echo}, {report} are operation names; {job} a queued job's id
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] = (400,)  # any of these; each 4xx with the JSON error body


BIG = b"1" + b"0" * 5000  # 10**5000
DEEP = 100_000
HOSTILE = [
    # Bodies that are not JSON, or JSON no parser should take.
    Hostile("invalid utf-8", "POST", "/v1/ops/{echo}", b'{"a": "\xff\xfe\xfd"}', JSON),
    Hostile("lone surrogate escape", "POST", "/v1/ops/{echo}", b'{"a": "\\ud800"}', JSON),
    Hostile("nul byte in a string", "POST", "/v1/ops/{echo}", b'{"a": "x\x00y"}', JSON),
    Hostile("deep arrays", "POST", "/v1/ops/{echo}", b"[" * DEEP + b"]" * DEEP, JSON),
    Hostile("deep objects", "POST", "/v1/ops/{echo}", b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON),
    Hostile("unclosed deep arrays", "POST", "/v1/ops/{echo}", b"[" * DEEP, JSON),
    Hostile("1e400", "POST", "/v1/ops/{add}", b'{"a": 1e400, "b": 1}', JSON),
    Hostile("-1e400", "POST", "/v1/ops/{add}", b'{"a": -1e400, "b": 1}', JSON),
    Hostile("5000 digits", "POST", "/v1/ops/{add}", b'{"a": %s, "b": 1}' % BIG, JSON),
    Hostile("NaN literal", "POST", "/v1/ops/{add}", b'{"a": NaN, "b": 1}', JSON),
    Hostile("Infinity literal", "POST", "/v1/ops/{add}", b'{"a": Infinity, "b": 1}', JSON),
    Hostile("trailing garbage", "POST", "/v1/ops/{echo}", b'{"a": 1} {"b": 2}', JSON),
    Hostile("empty body", "POST", "/v1/ops/{echo}", b"", JSON),
    Hostile("only whitespace", "POST", "/v1/ops/{echo}", b" \n\t ", JSON),
    Hostile("bom", "POST", "/v1/ops/{echo}", b'\xef\xbb\xbf{"a": 1}', JSON, (400, 202)),
    # Parsed, then against the contract, or simply accepted.
    Hostile(
        "a number past 64 bits",
        "POST",
        "/v1/ops/{add}",
        b'{"a": 1%s, "b": 1}' % (b"0" * 30),
        JSON,
        (202, 422),
    ),
    Hostile(
        "duplicate keys", "POST", "/v1/ops/{add}", b'{"a": "x", "a": 1, "b": 2}', JSON, (202, 422)
    ),
    Hostile(
        "duplicate keys, bad last",
        "POST",
        "/v1/ops/{add}",
        b'{"a": 1, "a": "x", "b": 2}',
        JSON,
        (422,),
    ),
    Hostile("null body", "POST", "/v1/ops/{echo}", b"null", JSON, (422,)),
    Hostile(
        "big array of nulls",
        "POST",
        "/v1/ops/{echo}",
        b"[" + b"null," * 200_000 + b"null]",
        JSON,
        (422,),
    ),
    Hostile(
        "many keys",
        "POST",
        "/v1/ops/{echo}",
        orjson.dumps({str(i): i for i in range(50_000)}),
        JSON,
        (202,),
    ),
    Hostile(
        "latin-1 charset",
        "POST",
        "/v1/ops/{echo}",
        b'{"a": "\xe9"}',
        {"content-type": "application/json; charset=latin-1"},
    ),
    # Sizes.
    Hostile(
        "2 MiB body", "POST", "/v1/ops/{echo}", b'{"a": "' + b"x" * (2 << 20) + b'"}', JSON, (413,)
    ),
    Hostile("8 KiB header", "GET", "/v1/ops", None, {"x-pad": "x" * 8192}, (200,)),
    # Parameters.
    Hostile("wait=abc", "POST", "/v1/ops/{add}?wait=abc", b'{"a":1,"b":1}', JSON),
    Hostile("wait=-1", "GET", "/v1/jobs/{job}?wait=-1"),
    Hostile("wait=nan", "GET", "/v1/jobs/{job}?wait=nan"),
    Hostile("wait=1e999", "GET", "/v1/jobs/{job}?wait=1e999"),
    Hostile("wait=tiny", "GET", "/v1/jobs/{job}?wait=1e-300", expect=(200,)),
    Hostile(
        "Prefer: wait=abc",
        "POST",
        "/v1/ops/{add}",
        b'{"a":1,"b":1}',
        {**JSON, "prefer": "wait=abc"},
        (202, 200),
    ),
    Hostile(
        "X-Deadline-Seconds: abc",
        "POST",
        "/v1/ops/{add}",
        b'{"a":1,"b":1}',
        {**JSON, "x-deadline-seconds": "abc"},
    ),
    Hostile(
        "X-Deadline-Seconds: inf",
        "POST",
        "/v1/ops/{add}",
        b'{"a":1,"b":1}',
        {**JSON, "x-deadline-seconds": "inf"},
    ),
    Hostile(
        "Idempotency-Key 300 chars",
        "POST",
        "/v1/ops/{add}",
        b'{"a":1,"b":1}',
        {**JSON, "idempotency-key": "k" * 300},
    ),
    Hostile("after=abc", "GET", "/v1/jobs/{job}?after=abc"),
    Hostile("after=-1", "GET", "/v1/jobs/{job}/events?after=-1"),
    Hostile("after=1e3", "GET", "/v1/jobs/{job}/events?after=1e3"),
    Hostile("after empty", "GET", "/v1/jobs/{job}/events?after="),
    Hostile("after 19 digits", "GET", "/v1/jobs/{job}/events?after=" + "9" * 19),
    Hostile("after=%00", "GET", "/v1/jobs/{job}/events?after=%00"),
    Hostile(
        "after far past the end", "GET", "/v1/jobs/{job}/events?after=" + "9" * 18, expect=(200,)
    ),
    Hostile(
        "Last-Event-ID abc",
        "GET",
        "/v1/jobs/{job}/events",
        headers={"accept": "text/event-stream", "last-event-id": "abc"},
    ),
    Hostile(
        "Last-Event-ID -1",
        "GET",
        "/v1/jobs/{job}/events",
        headers={"accept": "text/event-stream", "last-event-id": "-1"},
    ),
    Hostile(
        "Last-Event-ID 1.5",
        "GET",
        "/v1/jobs/{job}/events",
        headers={"accept": "text/event-stream", "last-event-id": "1.5"},
    ),
    Hostile(
        "Last-Event-ID 40 digits",
        "GET",
        "/v1/jobs/{job}/events",
        headers={"accept": "text/event-stream", "last-event-id": "9" * 40},
    ),
    Hostile(
        "Last-Event-ID 4 KiB",
        "GET",
        "/v1/jobs/{job}/events",
        headers={"accept": "text/event-stream", "last-event-id": "1" * 4096},
    ),
    # Job ids and operation names of other shapes.
    Hostile("job id 8 KiB", "GET", "/v1/jobs/" + "A" * 8192, expect=(404,)),
    Hostile("job id unicode", "GET", "/v1/jobs/j%C3%B6b-%E2%9C%93", expect=(404,)),
    Hostile("job id ../", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", expect=(404,)),
    Hostile("job id %00", "GET", "/v1/jobs/%00", expect=(404,)),
    Hostile("job id %00 events", "GET", "/v1/jobs/%00/events", expect=(404,)),
    Hostile("job id invalid utf-8", "GET", "/v1/jobs/%FF%FE", expect=(404,)),
    Hostile("job id sql", "GET", "/v1/jobs/x'%20OR%20'1'='1", expect=(404,)),
    Hostile("job id %25", "DELETE", "/v1/jobs/%25", expect=(404,)),
    Hostile("job id 8 KiB delete", "DELETE", "/v1/jobs/" + "B" * 8192, expect=(404,)),
    Hostile(
        "job id 8 KiB events wait",
        "GET",
        "/v1/jobs/" + "C" * 8192 + "/events?wait=1",
        expect=(404,),
    ),
    Hostile("op ../", "POST", "/v1/ops/..%2F..%2Fetc%2Fpasswd", b"{}", JSON, (404,)),
    Hostile("op %00", "GET", "/v1/ops/%00", expect=(404,)),
    Hostile("op invalid utf-8", "POST", "/v1/ops/%C0%AF", b"{}", JSON, (404,)),
    Hostile("op 8 KiB", "POST", "/v1/ops/" + "o" * 8192, b"{}", JSON, (404,)),
    Hostile("PUT on an op", "PUT", "/v1/ops/{add}", b"{}", JSON, (405,)),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
async def test_hostile_http_input(hostile, case: Hostile) -> None:
    gw, queued = hostile
    path = case.path.format(
        add=gw.op("math.add"), echo=gw.op("echo"), report=gw.op("report.generate"), job=queued
    )
    async with gw.client() as http:
        request = http.build_request(case.method, path, content=case.body, headers=case.headers)
        r = await http.send(request)
        assert r.status_code in case.expect, (r.status_code, r.text[:500])
        if r.status_code >= 400:
            assert_error_body(r)
        elif r.status_code == 202:
            assert r.json()["status"] == "queued"
        # The queued job is untouched, and the gateway still works.
        job = (await http.get(f"/v1/jobs/{queued}")).json()
        assert job["status"] == "queued" and job["seq"] == 1
    await still_serving(gw)


@pytest.mark.parametrize(
    ("seconds", "status"),
    [
        ("1e-300", 202),
        ("0.001", 202),
        ("5e6", 202),  # 58 days: past RabbitMQ's 49-day message TTL, so the sweep expires it
        ("31622400", 202),  # a year: the most a deadline may be
        ("1e8", 400),
        ("5e8", 400),
        ("1e17", 400),
        ("1e308", 400),
    ],
)
async def test_extreme_deadlines(hostile, seconds: str, status: int) -> None:
    """Deadlines up to a year are taken (202); longer ones are a bad parameter (400)."""
    gw, _ = hostile
    async with gw.client() as http:
        r = await http.post(
            f"/v1/ops/{gw.op('echo')}", json={}, headers={"X-Deadline-Seconds": seconds}
        )
    assert r.status_code == status, (r.status_code, r.text)
    if r.status_code == 400:
        assert_error_body(r)
    await still_serving(gw)


# -- below HTTP: raw sockets ------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, limit: float = 10) -> bytes:
    """Send `data` on a fresh connection; everything the server answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):  # refused and closed while we still wrote
            await writer.drain()
        async with asyncio.timeout(limit):
            try:
                return await reader.read(1 << 20)
            except ConnectionError:
                return b""
    finally:
        writer.close()


def port_of(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def raw_post(path: str, headers: bytes, body: bytes = b"{}") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers
        + b"Connection: close\r\n\r\n"
        + body
    )


# name -> (bytes to send, statuses allowed, whether the answer is the gateway's JSON)
RAW: dict[str, tuple[bytes, tuple[int, ...], bool]] = {
    "garbage request line": (b"GARBAGE\r\n\r\n", (400,), False),
    "64 KiB header": (
        b"GET /v1/ops HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"x" * 65536
        + b"\r\nConnection: close\r\n\r\n",
        (200, 400, 431),
        False,
    ),
    "1 MiB header": (
        b"GET /v1/ops HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"x" * (1 << 20)
        + b"\r\nConnection: close\r\n\r\n",
        (200, 400, 431),  # uvicorn's h11 limit bites only on headers that arrive in pieces
        False,
    ),
    "2000 headers": (
        b"GET /v1/ops HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        + b"Connection: close\r\n\r\n",
        (200, 400, 431),
        False,
    ),
    "lying Content-Length": (
        raw_post("/v1/ops/{echo}", b"Content-Length: 99999999999\r\n"),
        (413,),
        True,
    ),
    "Content-Length 40 digits": (
        raw_post("/v1/ops/{echo}", b"Content-Length: " + b"9" * 40 + b"\r\n"),
        (400, 413),
        False,
    ),
    "negative Content-Length": (
        raw_post("/v1/ops/{echo}", b"Content-Length: -1\r\n"),
        (400,),
        False,
    ),
    "Content-Length and chunked": (
        raw_post(
            "/v1/ops/{echo}",
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        (400,),
        False,
    ),
    "bad chunk size": (
        raw_post("/v1/ops/{echo}", b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
        (400,),
        False,
    ),
    "NUL in the path": (
        b"GET /v1/jobs/a\x00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        (400,),
        False,
    ),
    "raw invalid utf-8 in the path": (
        b"GET /v1/jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        (400, 404),
        False,
    ),
}


@pytest.mark.parametrize("name", list(RAW))
async def test_malformed_http_is_refused(hostile, name: str) -> None:
    """What no HTTP parser takes is refused by the server (uvicorn) before the app: a 4xx,
    whose body is the server's plain text, not the gateway's JSON; or the connection is
    closed. What gets through to the gateway is answered with its JSON error body."""
    gw, _ = hostile
    data, allowed, json_body = RAW[name]
    data = data.replace(b"{echo}", gw.op("echo").encode())
    answer = await raw_exchange(port_of(gw), data)
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert status in allowed, answer[:300]
        if json_body:
            assert b"content-type: application/json" in head.lower(), head
            ERROR_SCHEMA.validate(orjson.loads(body))
    await still_serving(gw)


async def test_slow_client_trickling_its_body(hostile) -> None:
    gw, _ = hostile
    body = b'{"a": 1, ' + b" " * 30 + b'"b": 2}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(
            f"POST /v1/ops/{gw.op('math.add')}?wait=5 HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        for n, byte in enumerate(body):
            writer.write(bytes([byte]))
            await writer.drain()
            if n == len(body) // 2:
                started = time.monotonic()
                await still_serving(gw)  # served while the slow client holds its request
                served_in = time.monotonic() - started
            await asyncio.sleep(0.04)  # the client's pace: 25 bytes a second
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["result"] == {"sum": 3}
    assert served_in < 5


async def test_thousands_of_idle_connections(hostile) -> None:
    gw, _ = hostile
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(20):  # in batches: the listen backlog is finite
            batch = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port_of(gw)) for _ in range(100))
            )
            writers.extend(w for _, w in batch)
        started = time.monotonic()
        await still_serving(gw)
        async with gw.client() as http:
            assert (await http.get("/healthz")).status_code == 200
        took = time.monotonic() - started
    finally:
        for writer in writers:
            writer.close()
    print(f"\n[idle connections] {len(writers)} idle; a normal job took {took:.3f}s")
    assert took < 5


# -- hostile worker answers ---------------------------------------------------------------


async def test_hostile_worker_answers(hostile) -> None:
    gw, _ = hostile
    url = gw.settings.broker_url
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)

        async def answer(body: bytes, correlation_id: str | None, type: str | None = None):
            await channel.default_exchange.publish(
                aio_pika.Message(body, correlation_id=correlation_id, type=type),
                routing_key=ANSWERS_QUEUE,
            )

        async with gw.client() as http:
            report = gw.op("report.generate")
            r = await http.post(f"/v1/ops/{report}", json={"title": "flooded"})
            flooded = r.json()["id"]
            r = await http.post(f"/v1/ops/{gw.op('echo')}", json={"big": True})
            big = r.json()["id"]
            flood = 2000
            started = time.monotonic()
            junk = [
                answer(b"\xff not json", "no-such-job"),
                answer(b"\xff not json", None),
                answer(b"{}", None, "error"),
                answer(b"{}", "x" * 255),
                answer(b"{}", "../../etc/passwd"),
                answer(b"{}", "j\u00f6b-\u2713"),
                answer(b'{"done": 1}', flooded, "no-such-type"),
                answer(b'{"bad": "shape"}', flooded, "progress"),  # dropped: not the contract
                answer(b"[" * 100_000, "no-such-job", "progress"),
                *(answer(orjson.dumps({"done": 1}), secrets.token_urlsafe(16)) for _ in range(300)),
            ]
            await asyncio.gather(*junk)
            progress = [
                answer(orjson.dumps({"done": n, "total": flood}), flooded, "progress")
                for n in range(1, flood + 1)
            ]
            flooding = asyncio.ensure_future(asyncio.gather(*progress))
            # Others are served meanwhile.
            during = time.monotonic()
            await still_serving(gw)
            served_in = time.monotonic() - during
            await flooding
            result = {"title": "flooded", "sections": ["s"]}
            await answer(orjson.dumps(result), flooded)
            # An 8 MiB result for the echo job: just within the default answer cap (one
            # over it fails its job: tests/test_answer_limits.py).
            huge = {"blob": "x" * ((8 << 20) - len('{"blob":""}'))}
            await answer(orjson.dumps(huge), big)
            job = await follow_to_end(http, flooded, 60)
            took = time.monotonic() - started
            # Answers to finished jobs change nothing.
            await asyncio.gather(
                *(
                    answer(orjson.dumps({"done": 1, "total": 1}), flooded, "progress")
                    for _ in range(50)
                ),
                answer(b'{"error": {"code": "late", "message": "late"}}', flooded, "error"),
                answer(b"not json", flooded),
                answer(orjson.dumps({"title": "other", "sections": []}), flooded),
            )
            await still_serving(gw)  # answers are handled in order: these came before
            again = (await http.get(f"/v1/jobs/{flooded}")).json()
            events = await events_of(http, flooded)
            big_job = await follow_to_end(http, big, 60)
    finally:
        await connection.close()
    print(
        f"\n[hostile answers] {flood} progress answers + junk handled in {took:.2f}s; "
        f"a normal job meanwhile took {served_in:.3f}s"
    )
    assert job["status"] == "succeeded", job
    assert job["result"] == result
    assert again == job
    assert_contiguous(events, flooded)
    kinds = [e["type"] for e in events]
    assert kinds.count("progress") >= flood
    assert big_job["status"] == "succeeded" and big_job["result"] == huge
    assert served_in < 10
