"""Topic streams in the Python client (`gateway.client`: `publish`, `subscribe`,
`topic_token`), against a real gateway and RabbitMQ.

Every test serves its own copy of the example contract `schemas/topics/chat.room.json`
under a fresh name (`t<hex>.chat.room`): all tests share one RabbitMQ node, and with it
the `gateway.topics` exchange."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

import gateway.client
from gateway.client import AsyncClient, Client, RequestRefused, TopicMessage, local_validator
from gateway.config import AuthSettings
from gateway.contracts import validation_details
from gateway.types import JSON
from tests.support import ROOT, RabbitNode, RunningGateway, TcpProxy, make_settings, serve_gateway

CHAT_CONTRACT = ROOT / "schemas" / "topics" / "chat.room.json"
CHAT_VECTORS = ROOT / "schemas" / "vectors" / "chat.room.json"
WITHIN = 30.0
"""Seconds a test waits for what it expects, at the most."""


@dataclasses.dataclass
class Chat:
    gateway: RunningGateway
    family: str
    """The test's own copy of the chat.room contract: `t<hex>.chat.room`."""

    @property
    def url(self) -> str:
        return self.gateway.url

    def room(self, name: str) -> str:
        return f"{self.family}.{name}"


@asynccontextmanager
async def chat_gateway(
    rabbit: RabbitNode, tmp: Path, family: str | None = None, **overrides: Any
) -> AsyncIterator[Chat]:
    family = family or new_family()
    topics = tmp / "topics"
    topics.mkdir()
    shutil.copy(CHAT_CONTRACT, topics / f"{family}.json")
    settings, ops = make_settings(tmp, rabbit.url, topics_dir=topics, **overrides)
    async with serve_gateway(settings, ops) as running:
        yield Chat(running, family)


def new_family() -> str:
    return f"t{secrets.token_hex(4)}.chat.room"


@pytest.fixture
async def chat(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[Chat]:
    async with chat_gateway(rabbit, tmp_path) as running:
        yield running


def said(n: int, who: str = "ann") -> list[JSON]:
    return [{"from": who, "text": f"line {i}"} for i in range(n)]


async def take(stream: AsyncGenerator[TopicMessage, None], n: int) -> list[TopicMessage]:
    """The first `n` messages of `stream`, which is then closed."""
    got: list[TopicMessage] = []
    async with contextlib.aclosing(stream), asyncio.timeout(WITHIN):
        async for message in stream:
            got.append(message)
            if len(got) == n:
                break
    return got


async def published_and_seen(client: AsyncClient, topic: str, message: JSON) -> None:
    """Publish `message` to the (new) `topic` and wait until the gateway hands it to a
    subscriber: it then lies before "from now on". (A 202 alone does not say that: the
    gateway's own consumer of the stream may not have had it yet.)"""
    await client.publish(topic, message)
    assert [m.data for m in await take(client.subscribe(topic, after=0), 1)] == [message]


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Notes each request it sends: method, path and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await super().handle_async_request(request)

    def lines(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.sent]


def test_topic_message_is_public_and_frozen() -> None:
    assert "TopicMessage" in gateway.client.__all__
    message = TopicMessage(1, "chat.room.1", {"from": "ann", "text": "hi"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.seq = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "case",
    orjson.loads(CHAT_VECTORS.read_bytes())["cases"],
    ids=lambda case: str(case["description"]),
)
def test_local_validation_follows_the_shared_vectors(case: dict[str, Any]) -> None:
    """What `publish(validate=True)` checks a message with: the served contract's
    `message` definition (here read from the file), with the gateway's details."""
    validator = local_validator(orjson.loads(CHAT_CONTRACT.read_bytes()), case["definition"])
    assert validator.is_valid(case["data"]) is case["valid"]
    details = validation_details(validator.iter_errors(case["data"]))
    assert [d["path"] for d in details] == case.get("details", [])


async def test_published_messages_are_replayed_from_after_0(chat: Chat) -> None:
    one, two = chat.room("1"), chat.room("2")
    async with AsyncClient(chat.url) as client:
        for message in said(3):
            accepted = await client.publish(one, message)
            assert accepted["topic"] == one
            assert isinstance(accepted["message_id"], str) and accepted["message_id"]
        await client.publish(two, {"from": "bob", "text": "elsewhere"})

        got = await take(client.subscribe(one, after=0), 3)
        assert [m.data for m in got] == said(3)
        assert {m.topic for m in got} == {one}
        seqs = [m.seq for m in got]
        assert seqs[0] > 0 and seqs == sorted(set(seqs))  # strictly increasing

        # After a seq: what follows it, and only that.
        assert await take(client.subscribe(one, after=seqs[0]), 2) == got[1:]
        # The contract name: every key of the family, in order; `topic` is what was
        # subscribed to (frames carry only the message).
        family = await take(client.subscribe(chat.family, after=0), 4)
        assert [m.data for m in family] == [*said(3), {"from": "bob", "text": "elsewhere"}]
        assert {m.topic for m in family} == {chat.family}
        assert [m.seq for m in family][:3] == seqs

        served = await client.topic_contract(one)
        assert served["definitions"]["message"]["required"] == ["from", "text"]
        assert chat.family in {t["name"] for t in await client.topics()}


async def test_a_subscriber_gets_what_is_published_next_in_order(chat: Chat) -> None:
    room = chat.room("live")
    async with AsyncClient(chat.url) as client:
        await published_and_seen(client, room, {"from": "ann", "text": "before"})
        stream = client.subscribe(room)  # no `after`: from the next message published
        async with contextlib.aclosing(stream), asyncio.timeout(WITHIN):
            first = asyncio.ensure_future(anext(stream))
            # The subscription starts once the gateway has it: publish probes until the
            # subscriber sees one.
            probes = 0
            while not first.done():
                probes += 1
                await client.publish(room, {"from": "probe", "text": str(probes)})
                await asyncio.wait([first], timeout=0.2)
            got = [first.result()]
            for message in said(20):
                await client.publish(room, message)
            async for message in stream:
                got.append(message)
                if message.data == said(20)[-1]:
                    break
    texts = [m.data["text"] for m in got]
    assert "before" not in texts
    first_probe = int(texts[0])
    assert [m.data for m in got] == [
        *({"from": "probe", "text": str(i)} for i in range(first_probe, probes + 1)),
        *said(20),
    ]
    assert [m.seq for m in got] == sorted({m.seq for m in got})


async def test_a_cut_subscriber_resumes_by_last_event_id_exactly_once(chat: Chat) -> None:
    room = chat.room("cut")
    messages = said(10)
    port = urlsplit(chat.url).port
    assert port is not None
    transport = RecordingTransport()
    got: list[TopicMessage] = []
    async with (
        TcpProxy(port) as proxy,
        AsyncClient(proxy.url, transport=transport) as subscriber,
        AsyncClient(chat.url) as publisher,
    ):
        for message in messages[:5]:
            await publisher.publish(room, message)
        stream = subscriber.subscribe(room, after=0)
        async with contextlib.aclosing(stream), asyncio.timeout(WITHIN):
            async for message in stream:
                got.append(message)
                if len(got) == 2:
                    proxy.cut()  # as a network failure would
                    # Published while the subscriber is away: it must resume to get them.
                    for later in messages[5:]:
                        await publisher.publish(room, later)
                if len(got) == len(messages):
                    break
        assert proxy.connections >= 2
    assert [m.data for m in got] == messages  # each once, in order
    streams = [r for r in transport.sent if r.url.path.endswith("/events")]
    assert "last-event-id" not in streams[0].headers
    assert streams[0].url.params["after"] == "0"
    resumed_after = streams[1].headers["last-event-id"]
    assert resumed_after in {str(m.seq) for m in got[1:5]}


async def test_a_subscriber_cut_before_its_first_message_misses_nothing(chat: Chat) -> None:
    """Without `after`, the subscription starts "from now on": where that is, is fixed at
    once, so that a stream lost before any message resumes from there, not from later."""
    room = chat.room("early")
    port = urlsplit(chat.url).port
    assert port is not None
    opened, come_back = asyncio.Event(), asyncio.Event()

    class HeldReconnects(RecordingTransport):
        """Holds every event stream after the first until `come_back`."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.headers.get("accept") == "text/event-stream":
                if opened.is_set():
                    await come_back.wait()
                response = await super().handle_async_request(request)
                opened.set()
                return response
            return await super().handle_async_request(request)

    transport = HeldReconnects()
    async with (
        TcpProxy(port) as proxy,
        AsyncClient(proxy.url, transport=transport) as subscriber,
        AsyncClient(chat.url) as publisher,
    ):
        await published_and_seen(publisher, room, {"from": "ann", "text": "before"})
        stream = subscriber.subscribe(room)
        async with contextlib.aclosing(stream), asyncio.timeout(WITHIN):
            first = asyncio.ensure_future(anext(stream))
            await opened.wait()
            proxy.cut()  # before any message came
            for message in said(3):
                await publisher.publish(room, message)
            come_back.set()
            got = [await first]
            async for message in stream:
                got.append(message)
                if len(got) == 3:
                    break
    assert [m.data for m in got] == said(3)
    streams = [r for r in transport.sent if r.url.path.endswith("/events")]
    long_poll, first_stream, second_stream = streams[0], streams[1], streams[2]
    assert "after" not in long_poll.url.params  # "from now on": where is that?
    # It resumes where "now" was when it subscribed (no message came to move that).
    assert second_stream.url.params["after"] == first_stream.url.params["after"]
    assert second_stream.headers["last-event-id"] == first_stream.url.params["after"]


async def test_the_blocking_client_publishes_and_subscribes(chat: Chat) -> None:
    room = chat.room("blocking")

    def use_blocking_client() -> tuple[list[JSON], list[TopicMessage]]:
        with Client(chat.url) as gw:
            accepted = [gw.publish(room, m) for m in said(3)]
            got = []
            messages = gw.subscribe(room, after=0)
            for message in messages:
                got.append(message)
                if len(got) == 3:
                    break
            messages.close()
            return accepted, got

    # In a thread: this test's event loop serves the gateway meanwhile.
    accepted, got = await asyncio.wait_for(asyncio.to_thread(use_blocking_client), WITHIN)
    assert [a["topic"] for a in accepted] == [room] * 3
    assert [m.data for m in got] == said(3)
    assert {m.topic for m in got} == {room}


async def test_validate_refuses_locally_with_the_gateway_s_details(chat: Chat) -> None:
    room = chat.room("strict")
    invalid = [c for c in orjson.loads(CHAT_VECTORS.read_bytes())["cases"] if not c["valid"]]
    transport = RecordingTransport()
    async with AsyncClient(chat.url, transport=transport) as client:
        for case in invalid:
            with pytest.raises(RequestRefused) as local:
                await client.publish(room, case["data"], validate=True)
            with pytest.raises(RequestRefused) as served:
                await client.publish(room, case["data"])  # the gateway's own verdict
            assert (local.value.status, local.value.code) == (422, "invalid_request")
            assert (served.value.status, served.value.code) == (422, "invalid_request")
            assert local.value.details == served.value.details, case["description"]
            assert [d["path"] for d in local.value.details] == case["details"]
        # The contract was fetched once; nothing refused locally was sent.
        assert transport.lines() == [f"GET /v1/topics/{room}"] + [f"POST /v1/topics/{room}"] * len(
            invalid
        )
        await client.publish(room, {"from": "ann", "text": "fine"}, validate=True)
        assert transport.lines()[-1] == f"POST /v1/topics/{room}"

    # A client made with validate=True validates what it publishes too.
    transport = RecordingTransport()
    async with AsyncClient(chat.url, validate=True, transport=transport) as client:
        with pytest.raises(RequestRefused) as refused:
            await client.publish(room, {"from": "ann"})
        assert refused.value.details == [{"path": "", "message": "'text' is a required property"}]
        assert transport.lines() == [f"GET /v1/topics/{room}"]


async def test_unknown_and_malformed_topics_are_refused(chat: Chat) -> None:
    unknown = f"t{secrets.token_hex(4)}.nobody"
    async with AsyncClient(chat.url) as client:
        for attempt in (
            client.publish(unknown, {"from": "ann", "text": "hi"}),
            client.publish(unknown, {"from": "ann", "text": "hi"}, validate=True),
            client.topic_contract(unknown),
            anext(client.subscribe(unknown, after=0)),
        ):
            with pytest.raises(RequestRefused) as refused:
                await asyncio.wait_for(attempt, WITHIN)
            assert (refused.value.status, refused.value.code) == (404, "unknown_topic")
        for malformed in (f"{chat.family}..x", f"{chat.family}.*", f"{chat.family}.#"):
            with pytest.raises(RequestRefused) as refused:
                await client.publish(malformed, {"from": "ann", "text": "hi"})
            assert (refused.value.status, refused.value.code) == (400, "invalid_topic")


async def test_a_topic_token_opens_that_topic_only(rabbit: RabbitNode, tmp_path: Path) -> None:
    key, family = secrets.token_urlsafe(16), new_family()
    keys = tmp_path / "keys.json"
    scopes = ["topics:publish:*", f"topics:subscribe:{family}"]
    keys.write_bytes(orjson.dumps({"keys": [{"key": key, "subject": "daemon", "scopes": scopes}]}))
    async with contextlib.AsyncExitStack() as stack:
        chat = await stack.enter_async_context(
            chat_gateway(rabbit, tmp_path, family, auth=AuthSettings(api_keys_file=keys))
        )
        room, other = chat.room("1"), chat.room("2")
        bearer = {"Authorization": f"Bearer {key}"}
        owner = await stack.enter_async_context(AsyncClient(chat.url, headers=bearer))
        browser = await stack.enter_async_context(AsyncClient(chat.url))

        await owner.publish(room, {"from": "ann", "text": "hi"})
        await owner.publish(other, {"from": "bob", "text": "not for you"})
        token = await owner.topic_token(room)
        assert token["topic"] == room
        assert token["expires_at"] > time.time()
        assert token["events"].startswith(f"/v1/topics/{room}/events?access_token=")

        got = await take(browser.subscribe(room, after=0, token=token["token"]), 1)
        assert [m.data for m in got] == [{"from": "ann", "text": "hi"}]
        with pytest.raises(RequestRefused) as elsewhere:
            await asyncio.wait_for(anext(browser.subscribe(other, token=token["token"])), WITHIN)
        assert elsewhere.value.status in (401, 403)
        with pytest.raises(RequestRefused) as anonymous:
            await browser.publish(room, {"from": "eve", "text": "hi"})
        assert anonymous.value.status == 401
