"""Topic streams against a real RabbitMQ: daemons in three languages publish with plain
AMQP, subscribers follow by SSE and long-poll, off-contract messages never reach them,
resuming misses nothing and repeats nothing (from the ring, from the stream itself when
older than the ring, on another gateway after the first was SIGKILLed), family and key
subscriptions get exactly their messages, in order."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pika
import pytest

import gateway.topic_feed
from tests.fault_support import GatewayProcess, SseEvent, metric, sse_events
from tests.support import ROOT, RabbitNode, RunningGateway, free_port, make_settings, serve_gateway

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def gw(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    settings, names = make_settings(
        tmp_path, rabbit.url, topics={}, sse_ping_seconds=1.0, topic_ring_messages=5
    )
    async with serve_gateway(settings, names) as running:
        yield running


def said(text: str, who: str = "test") -> dict[str, str]:
    return {"from": who, "text": text}


def room(gw: RunningGateway) -> str:
    return f"{gw.topic('chat.room')}.{secrets.token_hex(4)}"


async def publish(http: httpx.AsyncClient, topic: str, *messages: object) -> None:
    for message in messages:
        response = await http.post(f"/v1/topics/{topic}", json=message)
        assert response.status_code == 202, response.text
        assert response.json()["topic"] == topic


def publish_with_pika(url: str, topic: str, *bodies: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                "gateway.topics",
                topic,
                body,
                pika.BasicProperties(content_type="application/json"),
            )
    finally:
        connection.close()


async def run(*command: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def long_poll_until(
    http: httpx.AsyncClient, topic: str, after: int, count: int
) -> tuple[list[dict[str, object]], int]:
    """Long-poll from `after` until `count` messages came; they and the last `next`."""
    events: list[dict[str, object]] = []
    async with asyncio.timeout(30):
        while len(events) < count:
            response = await http.get(f"/v1/topics/{topic}/events?after={after}&wait=10")
            assert response.status_code == 200, response.text
            body = response.json()
            events += body["events"]
            assert body["next"] >= after
            after = body["next"]
    return events, after


async def take(events: AsyncIterator[SseEvent], count: int) -> list[SseEvent]:
    async with asyncio.timeout(30):
        return [await anext(events) for _ in range(count)]


async def test_daemons_in_three_languages_reach_sse_and_long_poll_subscribers(
    gw: RunningGateway, rabbit: RabbitNode
) -> None:
    topic = room(gw)
    env = {"GATEWAY_BROKER_URL": rabbit.url, "PATH": "/usr/bin:/bin"}
    async with gw.client() as http:
        start = (await http.get(f"/v1/topics/{topic}/events")).json()["next"]
        async with http.stream("GET", f"/v1/topics/{topic}/events", headers=SSE) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
            # Each valid message follows an invalid one: were those delivered, they would
            # come before it.
            await asyncio.to_thread(
                publish_with_pika,
                rabbit.url,
                topic,
                b'{"from": "pika"}',  # no text: off its contract
                orjson.dumps(said("from Python", "pika")),
            )
            publish_with_pika(rabbit.url, topic, b"not JSON")
            assert shutil.which("node")
            await run(
                "node",
                "tests/node/publish_topic.mjs",
                topic,
                '{"from": "amqplib", "text": ""}',  # too short: off its contract
                orjson.dumps(said("from JavaScript", "amqplib")).decode(),
                env=env,
            )
            await run(
                "perl",
                "tests/perl/publish_topic.pl",
                topic,
                '{"from": "perl", "text": "x", "extra": 1}',  # not allowed: off contract
                orjson.dumps(said("from Perl", "perl")).decode(),
                env=env,
            )
            got = await take(events, 3)
        polled, _ = await long_poll_until(http, topic, start, 3)
    expected = [
        said("from Python", "pika"),
        said("from JavaScript", "amqplib"),
        said("from Perl", "perl"),
    ]
    assert [e.data for e in got] == expected
    assert all(e.event == "message" for e in got)
    assert [e["data"] for e in polled] == expected
    assert [e["seq"] for e in polled] == [e.id for e in got]
    assert got[0].id < got[1].id < got[2].id
    assert all(e["topic"] == topic and e["type"] == "message" for e in polled)
    metrics = gw.service.metrics.exposition().decode()
    family = gw.topic("chat.room")
    assert metric(metrics, "gateway_topic_messages_total", outcome="invalid", topic=family) == 3
    assert metric(metrics, "gateway_topic_messages_total", outcome="malformed", topic=family) == 1


async def test_http_publish_validates_and_refuses_what_no_contract_covers(
    gw: RunningGateway,
) -> None:
    topic = room(gw)
    async with gw.client() as http:
        invalid = await http.post(f"/v1/topics/{topic}", json={"from": 1, "text": ""})
        assert invalid.status_code == 422
        error = invalid.json()["error"]
        assert error["code"] == "invalid_request"
        assert [d["path"] for d in error["details"]] == ["/from", "/text"]
        unknown = await http.post("/v1/topics/no.such.topic", json=said("x"))
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_topic")
        for bad in (f"{topic}.*", f"{topic}.#", f"{topic}..x"):
            response = await http.post(f"/v1/topics/{bad}", json=said("x"))
            assert response.status_code == 400, bad
            assert response.json()["error"]["code"] == "invalid_topic"
        text = await http.post(f"/v1/topics/{topic}", content=b"hi")
        assert text.status_code == 415
        await publish(http, topic, said("the only one"))
        replay = (await http.get(f"/v1/topics/{topic}/events?after=0")).json()
        assert [e["data"] for e in replay["events"]] == [said("the only one")]
        listing = (await http.get("/v1/topics")).json()["topics"]
        family = gw.topic("chat.room")
        assert {"name": family, "href": f"/v1/topics/{family}"}.items() <= next(
            t for t in listing if t["name"] == family
        ).items()
        contract = (await http.get(f"/v1/topics/{topic}")).json()
        assert "message" in contract["definitions"]
        assert contract["x-gateway"]["max_age"] == "1D"


async def test_family_and_key_subscribers_get_exactly_their_messages_in_order(
    gw: RunningGateway,
) -> None:
    family = gw.topic("chat.room")
    a, b = f"{family}.a{secrets.token_hex(3)}", f"{family}.b{secrets.token_hex(3)}"
    plan = [(a if i % 3 == 0 else b if i % 3 == 1 else family, said(str(i))) for i in range(30)]
    async with gw.client() as http:
        start = (await http.get(f"/v1/topics/{family}/events")).json()["next"]
        async with (
            http.stream("GET", f"/v1/topics/{family}/events", headers=SSE) as all_stream,
            http.stream("GET", f"/v1/topics/{a}/events", headers=SSE) as a_stream,
        ):
            all_events, a_events = sse_events(all_stream), sse_events(a_stream)
            # Published concurrently per key, in order within each key.
            await asyncio.gather(
                *(publish(http, key, *[m for k, m in plan if k == key]) for key in (a, b, family))
            )
            got_all = await take(all_events, 30)
            got_a = await take(a_events, 10)
        polled_b, _ = await long_poll_until(http, b, start, 10)
        polled_all, _ = await long_poll_until(http, family, start, 30)
    for key, got in ((a, [e.data for e in got_a]), (b, [e["data"] for e in polled_b])):
        assert got == [m for k, m in plan if k == key]
    assert sorted(e.data["text"] for e in got_all) == sorted(str(i) for i in range(30))
    for key in (a, b, family):  # each key's messages in the order they were published
        texts = [e["data"]["text"] for e in polled_all if e["topic"] == key]
        assert texts == [m["text"] for k, m in plan if k == key]
    assert [e["data"] for e in polled_all] == [e.data for e in got_all]  # one order for all
    for seqs in ([e.id for e in got_all], [e.id for e in got_a], [e["seq"] for e in polled_b]):
        assert seqs == sorted(set(seqs))  # strictly increasing


async def test_a_resumed_stream_gets_the_rest_exactly_once_from_the_ring(
    gw: RunningGateway,
) -> None:
    topic = room(gw)
    async with gw.client() as http:
        start = (await http.get(f"/v1/topics/{topic}/events")).json()["next"]
        await publish(http, topic, *[said(f"m{i}") for i in range(1, 5)])
        async with http.stream(
            "GET", f"/v1/topics/{topic}/events?after={start}", headers=SSE
        ) as stream:
            first = await take(sse_events(stream), 3)  # drops after message 3
        await publish(http, topic, said("m5"))
        # Within the ring (5 messages): no stream consumer is needed.
        assert first[-1].id >= gw.service.topic_log.feeds[gw.topic("chat.room")].ring_floor
        async with http.stream(
            "GET",
            f"/v1/topics/{topic}/events?after={start}",  # Last-Event-ID wins over after
            headers={**SSE, "Last-Event-ID": str(first[-1].id)},
        ) as stream:
            events = sse_events(stream)
            rest = await take(events, 2)
            await publish(http, topic, said("m6"))
            rest += await take(events, 1)
    assert [e.data["text"] for e in first + rest] == [f"m{i}" for i in range(1, 7)]


async def test_a_subscriber_behind_the_ring_is_caught_up_from_the_stream(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ring holds 5 messages; a subscriber resuming 40 back is caught up by a stream
    consumer from its offset, in batches of 7 here (a catch-up kept between reads), then
    joins the live feed: no gap, no duplicate. Several subscribers at one offset share
    one catch-up."""
    monkeypatch.setattr(gateway.topic_feed, "CATCH_UP_BATCH", 7)
    topic = room(gw)
    other = room(gw)
    log = gw.service.topic_log
    async with gw.client() as http:
        start = (await http.get(f"/v1/topics/{topic}/events")).json()["next"]
        for i in range(40):
            await publish(http, topic, said(f"m{i}"))
            await publish(http, other, said(f"other {i}"))  # skipped by key subscribers
        feed = log.feeds[gw.topic("chat.room")]
        assert feed.ring_floor > start  # the first messages have left the ring

        async def replay(after: int, count: int) -> list[SseEvent]:
            async with http.stream(
                "GET", f"/v1/topics/{topic}/events", headers={**SSE, "Last-Event-ID": str(after)}
            ) as stream:
                return await take(sse_events(stream), count)

        everything, *alike = await asyncio.gather(*(replay(start, 40) for _ in range(4)))
        assert [e.data["text"] for e in everything] == [f"m{i}" for i in range(40)]
        assert all(a == everything for a in alike)
        tenth = everything[9].id
        rest = await replay(tenth, 30)
        assert [e.data["text"] for e in rest] == [f"m{i}" for i in range(10, 40)]
        # Long-poll catches up the same way, batch by batch.
        polled, cursor = await long_poll_until(http, topic, start, 40)
        assert [e["data"]["text"] for e in polled] == [f"m{i}" for i in range(40)]
        # Live after the catch-up: the next message, once.
        waiting = asyncio.ensure_future(
            http.get(f"/v1/topics/{topic}/events?after={cursor}&wait=20")
        )
        await publish(http, topic, said("live"))
        live = (await waiting).json()["events"]
        assert [e["data"]["text"] for e in live] == ["live"]
    assert not log._reading  # every catch-up read finished and was let go


async def test_a_stream_resumes_on_another_gateway_after_the_first_was_killed(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    settings, names = make_settings(tmp_path, rabbit.url, topics={})
    family = names["chat.room"]
    topic = f"{family}.{secrets.token_hex(4)}"

    def process(name: str) -> GatewayProcess:
        return GatewayProcess(
            free_port(),
            rabbit.url,
            settings.contracts_dir,
            settings.store_url,
            tmp_path / f"{name}.log",
        )

    first, second = process("first"), process("second")
    await first.start()
    await second.start(take_over=False)
    try:
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=30) as one,
            httpx.AsyncClient(base_url=second.url, timeout=30) as two,
        ):
            start = (await two.get(f"/v1/topics/{topic}/events")).json()["next"]
            await publish(two, topic, *[said(f"m{i}") for i in range(1, 5)])
            async with one.stream(
                "GET", f"/v1/topics/{topic}/events?after={start}", headers=SSE
            ) as stream:
                events = sse_events(stream)
                seen = await take(events, 2)
                await first.kill()
                # The subscriber drops here, after message 2: what else was on its way
                # is lost with the connection.
                with contextlib.suppress(httpx.HTTPError):
                    async for _ in events:
                        pass
            await publish(two, topic, said("m5"))
            async with two.stream(
                "GET",
                f"/v1/topics/{topic}/events",
                headers={**SSE, "Last-Event-ID": str(seen[-1].id)},
            ) as stream:
                rest = await take(sse_events(stream), 3)
    finally:
        await first.stop()
        await second.stop()
    assert [e.data["text"] for e in seen + rest] == [f"m{i}" for i in range(1, 6)]


async def test_subscribing_with_no_after_starts_at_the_next_message(gw: RunningGateway) -> None:
    topic = room(gw)
    async with gw.client() as http:
        await publish(http, topic, said("before"))
        async with http.stream("GET", f"/v1/topics/{topic}/events", headers=SSE) as stream:
            await publish(http, topic, said("after"))
            got = await take(sse_events(stream), 1)
        assert [e.data["text"] for e in got] == ["after"]
        replay = (await http.get(f"/v1/topics/{topic}/events?after=0")).json()["events"]
        assert [e["data"]["text"] for e in replay] == ["before", "after"]
        assert replay[0]["seq"] > 0  # offset 0 is the stream's marker, never a message


async def test_topic_subscribers_count_as_waiters(gw: RunningGateway) -> None:
    topic = room(gw)
    async with gw.client() as http:
        before = gw.service.waiting
        async with http.stream("GET", f"/v1/topics/{topic}/events", headers=SSE) as stream:
            await anext(stream.aiter_lines())
            assert gw.service.topic_hub.waiting == 1
            assert gw.service.waiting == before + 1


async def test_a_graceful_shutdown_ends_topic_streams_cleanly(
    rabbit: RabbitNode, tmp_path: Path
) -> None:
    """A topic's stream never ends by itself: a stopping gateway ends it (a clean end of
    the chunked response), instead of waiting for it until cancelled at the grace
    period's end; the client resumes elsewhere by Last-Event-ID."""
    settings, names = make_settings(tmp_path, rabbit.url, topics={})
    topic = f"{names['chat.room']}.{secrets.token_hex(4)}"
    stopping: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
    serving = serve_gateway(settings, names)
    gw = await serving.__aenter__()
    try:
        async with (
            gw.client() as http,
            http.stream("GET", f"/v1/topics/{topic}/events", headers=SSE) as stream,
        ):
            events = sse_events(stream)
            await publish(http, topic, said("before the end"))
            assert [e.data["text"] for e in await take(events, 1)] == ["before the end"]
            stopping = asyncio.ensure_future(serving.__aexit__(None, None, None))
            async with asyncio.timeout(10):
                assert [e async for e in events] == []  # it ends, without an error
                await stopping
    finally:
        if not stopping.done():
            await serving.__aexit__(None, None, None)
