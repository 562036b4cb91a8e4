"""The curl scripts in examples/curl, run as a user would, against the polyglot gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from tests.polyglot import Polyglot
from tests.support import ROOT, RabbitNode, RunningGateway, make_settings, serve_gateway

CURL = ROOT / "examples" / "curl"
REPORT = '{"title": "Q3", "sections": 3, "seconds_per_section": 0.1}'


async def run(polyglot: Polyglot, script: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(CURL / script),
        *args,
        env=polyglot.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_submit_and_wait(polyglot: Polyglot) -> None:
    job = orjson.loads(await run(polyglot, "submit-and-wait.sh", "math.add", '{"a": 2, "b": 3}'))
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 5}


async def test_long_poll_loop(polyglot: Polyglot) -> None:
    lines = (await run(polyglot, "long-poll.sh", "report.generate", REPORT)).splitlines()
    events = [orjson.loads(line) for line in lines[:-1]]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("progress") == 3
    assert events[-1]["type"] == "result"
    assert orjson.loads(lines[-1])["status"] == "succeeded"


async def test_sse_stream(polyglot: Polyglot) -> None:
    text = await run(polyglot, "stream.sh", "report.generate", REPORT)
    ids = [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]
    types = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")
    ]
    assert ids == [str(n) for n in range(1, len(ids) + 1)]
    assert types[0] == "queued" and types[-1] == "result"
    assert types.count("progress") == 3


def readme_try_it() -> str:
    """The shell block of README.md's "Try it" section, as a user pastes it."""
    section = (ROOT / "README.md").read_text().split("\n## Try it\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


async def test_readme_try_it(polyglot: Polyglot) -> None:
    script = readme_try_it().replace("http://127.0.0.1:8000", polyglot.gateway.url)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=polyglot.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    # The curls print jobs back to back (and SSE text between): pick out each job.
    decoder = json.JSONDecoder()
    jobs = [decoder.raw_decode(text, m.start())[0] for m in re.finditer(r'\{"id":', text)]
    assert jobs[0]["result"] == {"sum": 5}
    assert jobs[1]["op"] == "report.generate" and jobs[1]["status"] == "succeeded"
    assert "event: result" in text
    # The cancel example cancels a job that is still running, never a finished one.
    running, cancelled = jobs[-2:]
    assert running["id"] == cancelled["id"] and running["status"] == "running"
    assert cancelled["status"] == "cancelled"


# --- topics: examples/curl/topic-publish.sh and topic-subscribe.sh -----------------------


@pytest.fixture(scope="module")
async def topics_gateway(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    """A gateway with the topic contracts of schemas/topics, on a virtual host of its own."""
    settings, ops = make_settings(
        tmp_path_factory.mktemp("topics"),
        rabbit.add_vhost("curl-topics-" + secrets.token_hex(3)),
        topics_dir=ROOT / "schemas" / "topics",
    )
    async with serve_gateway(settings, ops) as gateway:
        yield gateway


def topic_env(gateway: RunningGateway) -> dict[str, str]:
    return {**os.environ, "GATEWAY_URL": gateway.url}


async def run_topic_script(
    gateway: RunningGateway, script: str, *args: str
) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(CURL / script),
        *args,
        env=topic_env(gateway),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def new_room_topic() -> str:
    return f"chat.room.curl-{secrets.token_hex(4)}"


async def test_topic_publish(topics_gateway: RunningGateway) -> None:
    topic = new_room_topic()
    status, out, err = await run_topic_script(
        topics_gateway, "topic-publish.sh", topic, '{"from": "curl", "text": "hi"}'
    )
    assert status == 0, err
    answer = orjson.loads(out)
    assert answer["topic"] == topic and answer["message_id"]
    async with topics_gateway.client() as http:
        page = (await http.get(f"/v1/topics/{topic}/events", params={"after": 0})).json()
    assert [event["data"] for event in page["events"]] == [{"from": "curl", "text": "hi"}]


async def test_topic_publish_against_the_contract(topics_gateway: RunningGateway) -> None:
    status, out, _ = await run_topic_script(
        topics_gateway, "topic-publish.sh", new_room_topic(), '{"from": "curl", "text": ""}'
    )
    assert status == 22  # curl --fail-with-body: an HTTP error, its body printed
    error = orjson.loads(out)["error"]
    assert error["code"] == "invalid_request"
    assert [detail["path"] for detail in error["details"]] == ["/text"]


@asynccontextmanager
async def subscribed(gateway: RunningGateway, *args: str) -> AsyncIterator[asyncio.StreamReader]:
    """topic-subscribe.sh ARGS running (it never ends by itself); its output. At the end,
    its process group (the script and its curl) is ended."""
    process = await asyncio.create_subprocess_exec(
        str(CURL / "topic-subscribe.sh"),
        *args,
        env=topic_env(gateway),
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        yield process.stdout
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        await process.wait()


async def lines_until(stream: asyncio.StreamReader, last: Callable[[str], bool]) -> list[str]:
    """The lines `stream` shows, up to the first for which `last` holds."""
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not lines or not last(lines[-1]):
            line = await stream.readline()
            assert line, f"the output ended: {lines}"
            lines.append(line.decode().rstrip("\r\n"))
    return lines


async def publish(gateway: RunningGateway, topic: str, *texts: str) -> None:
    async with gateway.client() as http:
        for text in texts:
            r = await http.post(f"/v1/topics/{topic}", json={"from": "test", "text": text})
            assert r.status_code == 202, r.text


def sse_messages(lines: list[str]) -> list[tuple[int, str, object]]:
    """(id, event, data) of each event in SSE `lines`."""
    events, fields = [], {}
    for line in [*lines, ""]:
        if line == "":
            if "data" in fields:
                events.append((int(fields["id"]), fields["event"], orjson.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":") and ": " in line:
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


async def test_topic_subscribe_sse_from_the_start(topics_gateway: RunningGateway) -> None:
    topic = new_room_topic()
    await publish(topics_gateway, topic, "one", "two")
    async with subscribed(topics_gateway, topic, "0") as out:
        lines = await lines_until(out, lambda line: '"two"' in line)
    events = sse_messages(lines)
    assert [(event, data) for _, event, data in events] == [
        ("message", {"from": "test", "text": "one"}),
        ("message", {"from": "test", "text": "two"}),
    ]
    assert events[0][0] < events[1][0]


async def test_topic_subscribe_sse_from_the_next_message(topics_gateway: RunningGateway) -> None:
    topic = new_room_topic()
    await publish(topics_gateway, topic, "before")
    async with subscribed(topics_gateway, topic) as out:
        # The stream's head (a comment, then retry:) comes once it is subscribed.
        head = await lines_until(out, lambda line: line.startswith("retry:"))
        await publish(topics_gateway, topic, "live")
        lines = await lines_until(out, lambda line: '"live"' in line)
    assert head[0].startswith(":")
    assert [data for _, _, data in sse_messages(lines)] == [{"from": "test", "text": "live"}]


async def test_topic_subscribe_long_poll(topics_gateway: RunningGateway) -> None:
    topic = new_room_topic()
    await publish(topics_gateway, topic, "one", "two")
    async with subscribed(topics_gateway, "--poll", topic, "0") as out:
        lines = await lines_until(out, lambda line: '"two"' in line)
        await publish(topics_gateway, topic, "three")  # the loop goes on past "next"
        lines += await lines_until(out, lambda line: '"three"' in line)
    events = [orjson.loads(line) for line in lines]
    assert [event["data"]["text"] for event in events] == ["one", "two", "three"]
    assert {(event["type"], event["topic"]) for event in events} == {("message", topic)}
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs))


def readme_topics() -> str:
    """The shell block of README.md's topics section."""
    section = (ROOT / "README.md").read_text().split("\n## Topics", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


async def test_readme_topics(topics_gateway: RunningGateway) -> None:
    script = readme_topics().replace("http://127.0.0.1:8000", topics_gateway.url)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=topic_env(topics_gateway),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    # The curls print their JSON back to back.
    decoder, text = json.JSONDecoder(), out.decode()
    published, end = decoder.raw_decode(text)
    page = decoder.raw_decode(text[end:].lstrip())[0]
    assert published["topic"] == "chat.room.lobby"
    assert page["events"][-1]["data"] == {"from": "ann", "text": "hello"}
    assert page["events"][-1]["seq"] == page["next"]
