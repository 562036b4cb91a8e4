"""A topic's stream on a three-node RabbitMQ cluster: the node that leads the stream goes
away while messages are published over HTTP and subscribers follow by SSE and long-poll.
Every message the gateway accepted (202) reaches each subscriber exactly once, in order,
and is still in the stream afterwards (`?after=0`).

A publisher retries a 503 after its Retry-After, as the README tells clients to; each
attempt carries a text of its own, so an attempt refused with 503 that RabbitMQ kept all
the same (a confirm lost with the node) may show up, once, but never as a duplicate of an
accepted one."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from gateway.topic_contracts import load_topic_contract
from gateway.wire import topic_stream
from tests.cluster_support import RabbitCluster, queue_info, running_cluster
from tests.fault_support import assert_error_body
from tests.support import RabbitNode, make_settings, serve_gateway

SSE = {"Accept": "text/event-stream"}
BEFORE, AFTER = 20, 20
"""Messages published before the loss, and accepted after it."""
PACE_SECONDS = 0.05
"""Between one publisher's messages (a steady trickle while the node goes)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def retry_after(response: httpx.Response) -> float:
    """A 503's Retry-After, as a client honours it."""
    assert_error_body(response, 503)
    return float(response.headers["retry-after"])


@dataclass
class Publisher:
    """Publishes `m<i> try <n>` over HTTP until accepted."""

    http: httpx.AsyncClient
    topic: str
    accepted: list[str] = field(default_factory=list)
    attempted: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)

    async def publish(self, i: int) -> None:
        attempt = 0
        async with asyncio.timeout(60):
            while True:
                attempt += 1
                text = f"m{i} try {attempt}"
                self.attempted.add(text)
                try:
                    response = await self.http.post(
                        f"/v1/topics/{self.topic}", json={"from": "test", "text": text}
                    )
                except httpx.TransportError as exc:
                    self.outcomes[type(exc).__name__] += 1
                    await asyncio.sleep(1.0)  # a client's pause before it retries
                    continue
                self.outcomes[str(response.status_code)] += 1
                if response.status_code == 202:
                    self.accepted.append(text)
                    return
                await asyncio.sleep(retry_after(response))


class Received:
    """What one subscriber got, in order: (seq, text)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[tuple[int, str]] = []
        self.cursor = 0
        self.reconnects = 0
        self._changed = asyncio.Event()

    def add(self, seq: int, data: dict[str, str]) -> None:
        self.messages.append((seq, data["text"]))
        self._changed.set()

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    async def until_has(self, wanted: list[str], limit: float = 60) -> None:
        """Wait until every text of `wanted` came (each arrival wakes this)."""
        try:
            async with asyncio.timeout(limit):
                while not set(wanted) <= set(self.texts):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            missing = sorted(set(wanted) - set(self.texts))
            raise AssertionError(f"{self.name} never got {missing}") from None

    def check(self, publisher: Publisher) -> None:
        """Each accepted message exactly once, in publishing order; nothing else but an
        attempt that was refused, at most once; seq strictly increasing."""
        texts, seqs = self.texts, [seq for seq, _ in self.messages]
        assert len(texts) == len(set(texts)), (self.name, Counter(texts).most_common(3))
        assert seqs == sorted(set(seqs)), self.name
        assert set(texts) <= publisher.attempted, (self.name, set(texts) - publisher.attempted)
        accepted = set(publisher.accepted)
        assert [t for t in texts if t in accepted] == publisher.accepted, self.name


async def follow_sse(http: httpx.AsyncClient, topic: str, got: Received) -> None:
    """An SSE subscriber from `after=0` that, when its stream is cut or refused,
    reconnects with Last-Event-ID, as EventSource does."""
    last: str | None = None
    while True:
        headers = SSE if last is None else {**SSE, "Last-Event-ID": last}
        try:
            async with http.stream(
                "GET", f"/v1/topics/{topic}/events?after=0", headers=headers
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    await asyncio.sleep(retry_after(response))
                    continue
                fields: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "id" in fields:
                        last = fields["id"]  # an id with no data too: where it stands
                    if "data" in fields:
                        assert fields.get("event") == "message", fields
                        got.add(int(fields["id"]), orjson.loads(fields["data"]))
                    fields = {}
        except httpx.TransportError:
            pass
        got.reconnects += 1
        await asyncio.sleep(0.5)  # EventSource's retry pause (the stream says `retry:`)


async def follow_long_poll(http: httpx.AsyncClient, topic: str, got: Received) -> None:
    """A long-poll subscriber from `after=0`, going on from each answer's `next`."""
    while True:
        try:
            response = await http.get(
                f"/v1/topics/{topic}/events?after={got.cursor}&wait=5", timeout=30
            )
        except httpx.TransportError:
            got.reconnects += 1
            await asyncio.sleep(1.0)
            continue
        if response.status_code != 200:
            got.reconnects += 1
            await asyncio.sleep(retry_after(response))
            continue
        body = response.json()
        for event in body["events"]:
            assert event["topic"] == topic, event
            got.add(event["seq"], event["data"])
        assert body["next"] >= got.cursor
        got.cursor = body["next"]


async def declare_stream_on(node: RabbitNode, stream: str, arguments: dict[str, object]) -> None:
    """Declare the stream through `node`, as the gateway would: `node` leads it."""
    connection = await aio_pika.connect(node.url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(stream, durable=True, arguments=arguments)


async def replicated(cluster: RabbitCluster, stream: str) -> dict[str, object]:
    """What rabbitmqctl says of the stream once it has a member on every node, each
    online (replicas start apart from the declaration: polled, as rabbitmqctl is asked)."""
    everyone = {f"{n.name}@localhost" for n in cluster.nodes}
    async with asyncio.timeout(60):
        while True:
            info = await asyncio.to_thread(queue_info, cluster.nodes[1], stream)
            if set(info["members"]) == set(info["online"]) == everyone:
                return info
            await asyncio.sleep(0.5)


def node_named(cluster: RabbitCluster, erlang_name: object) -> RabbitNode:
    return next(n for n in cluster.nodes if f"{n.name}@localhost" == erlang_name)


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    "leader_is",
    [
        # The gateway declares the stream, so the stream's leader is the node it is
        # connected to: both go; stopped gracefully.
        "the gateway's node",
        # Declared elsewhere first: the gateway's connections stay, the leader is killed.
        "another node",
    ],
)
async def test_the_stream_survives_the_loss_of_its_leader_node(
    cluster: RabbitCluster, tmp_path: Path, leader_is: str
) -> None:
    first, second, third = cluster.nodes
    settings, names = make_settings(
        tmp_path,
        " ".join(cluster.urls),  # the gateway connects to the first, fails over in turn
        topics={},
        sse_ping_seconds=1.0,
        topic_ring_messages=5,  # replay from 0 comes from the stream itself
    )
    family = names["chat.room"]
    topic = f"{family}.{secrets.token_hex(4)}"
    stream = topic_stream(family)
    if leader_is == "another node":
        contract = load_topic_contract(settings.topics_dir / f"{family}.json")
        await declare_stream_on(third, stream, contract.settings.stream_arguments())
    lost: RabbitNode | None = None
    try:
        async with serve_gateway(settings, names) as gw, gw.client() as http:
            publisher = Publisher(http, topic)
            for i in range(BEFORE):
                await publisher.publish(i)
            assert publisher.outcomes == {"202": BEFORE}

            sse, polled = Received("the SSE subscriber"), Received("the long-poll subscriber")
            followers = [
                asyncio.create_task(follow_sse(http, topic, sse)),
                asyncio.create_task(follow_long_poll(http, topic, polled)),
            ]
            try:
                for got in (sse, polled):
                    await got.until_has(publisher.accepted)

                info = await replicated(cluster, stream)
                assert info["type"] == "stream", info
                lost = node_named(cluster, info["leader"])
                assert lost is (first if leader_is == "the gateway's node" else third), info

                # Publish on while the leader goes, then until AFTER more were accepted.
                going = asyncio.ensure_future(
                    asyncio.to_thread(lost.stop if lost is first else lost.kill)
                )
                i = BEFORE
                while not going.done():
                    await publisher.publish(i)
                    i += 1
                    await asyncio.sleep(PACE_SECONDS)
                await going
                for more in range(i, i + AFTER):
                    await publisher.publish(more)
                    await asyncio.sleep(PACE_SECONDS)

                for got in (sse, polled):
                    await got.until_has(publisher.accepted)
            finally:
                for task in followers:
                    task.cancel()
                await asyncio.gather(*followers, return_exceptions=True)

            # Everything is still in the stream, on the nodes that are left.
            replay = Received("a replay from 0")
            replaying = asyncio.create_task(follow_long_poll(http, topic, replay))
            try:
                await replay.until_has(publisher.accepted)
            finally:
                replaying.cancel()
                await asyncio.gather(replaying, return_exceptions=True)
            rest = await http.get(f"/v1/topics/{topic}/events?after={replay.cursor}")
            assert rest.status_code == 200, rest.text
            for event in rest.json()["events"]:  # only refused attempts could be left
                replay.add(event["seq"], event["data"])

            survivor = second if lost is not second else third
            info = await asyncio.to_thread(queue_info, survivor, stream)
            assert info["leader"] != f"{lost.name}@localhost", info
            assert gw.service.broker.ready
    finally:
        if lost is not None:  # whole again for the next test
            await asyncio.to_thread(lost.start)
    report = (
        f"{leader_is}: {len(publisher.accepted)} accepted, outcomes {dict(publisher.outcomes)}, "
        f"SSE reconnects {sse.reconnects}, long-poll retries {polled.reconnects}, "
        f"refused attempts kept all the same {len(set(replay.texts) - set(publisher.accepted))}"
    )
    print(report)
    for got in (sse, polled, replay):
        got.check(publisher)
    assert len(publisher.accepted) >= BEFORE + AFTER
