"""The chat example as people use it: the page (examples/chat/) served by a real gateway
(`--static /chat=examples/chat`, topics from schemas/topics), two pages in real headless
Chromium, and the Perl daemon in the room (examples/perl/chat_daemon.pl) as a process
of its own on RabbitMQ.

Chromium is driven through playwright-core (the JS client's dev dependency, with the
Chromium `make setup` installs), by a small Node bridge that runs page methods this test
sends it as JSON lines: the test itself stays here, in Python."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from gateway.config import AuthSettings, Settings
from tests.browser import Chromium, Page, browser_missing, running_chromium
from tests.polyglot import start_worker
from tests.support import ROOT, RabbitNode, make_settings, serve_gateway

CHAT = ROOT / "examples" / "chat"
DAEMON = ROOT / "examples" / "perl" / "chat_daemon.pl"
pytestmark = pytest.mark.timeout(180)

# What a page shows, as [from, text] pairs in order.
SHOWN = (
    "[...document.querySelectorAll('#messages li')]"
    ".map((li) => [li.querySelector('.from').textContent, li.querySelector('.text').textContent])"
)


class ChatPage(Page):
    async def live(self) -> None:
        await self.wait_for("document.querySelector('#status').dataset.state === 'live'")

    async def say(self, name: str, text: str) -> None:
        """Send `text` as `name`, and wait for the gateway's answer to the POST (the button
        is disabled while it is on its way)."""
        await self.call("fill", "#name", name)
        await self.call("fill", "#text", text)
        await self.call("click", "#send")
        await self.wait_for("!document.querySelector('#send').disabled")

    async def shown(self) -> list[list[str]]:
        shown: list[list[str]] = await self.evaluate(SHOWN)
        return shown

    async def wait_for_message(self, sender: str, text: str) -> None:
        wanted = f"m[0] === {json.dumps(sender)} && m[1] === {json.dumps(text)}"
        await self.wait_for(f"{SHOWN}.some((m) => {wanted})")

    async def wait_for_count(self, count: int) -> None:
        await self.wait_for(f"document.querySelectorAll('#messages li').length >= {count}")


@dataclass
class Chat:
    url: str
    broker_url: str
    chromium: Chromium
    daemon: asyncio.subprocess.Process

    def room_url(self, room: str) -> str:
        return f"{self.url}/chat/#{room}"

    async def open(self, room: str) -> ChatPage:
        page = ChatPage(self.chromium, await self.chromium.open(self.room_url(room)))
        await page.live()
        return page


def new_room() -> str:
    return "r-" + secrets.token_hex(4)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Chromium]:
    if missing := browser_missing() + ([] if shutil.which("perl") else ["perl"]):
        pytest.skip("no " + ", no ".join(missing))
    async with running_chromium() as browser:
        yield browser


def chat_settings(tmp: Path, broker_url: str, **overrides: Any) -> tuple[Settings, dict[str, str]]:
    return make_settings(
        tmp,
        broker_url,
        topics_dir=ROOT / "schemas" / "topics",
        static=(("/chat", CHAT),),
        **overrides,
    )


@pytest.fixture(scope="module")
async def chat(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory, chromium: Chromium
) -> AsyncIterator[Chat]:
    """A gateway serving the chat page and the chat.room topics, and the Perl daemon, on a
    virtual host of their own (so a stream of their own); and Chromium."""
    broker_url = rabbit.add_vhost("chat-" + secrets.token_hex(3))
    settings, ops = chat_settings(tmp_path_factory.mktemp("chat"), broker_url)
    async with serve_gateway(settings, ops) as gateway, chromium.pages_closed_after():
        env = {**os.environ, "GATEWAY_BROKER_URL": broker_url}
        daemon = await start_worker(["perl", str(DAEMON)], env)
        try:
            yield Chat(gateway.url, broker_url, chromium, daemon)
        finally:
            daemon.terminate()
            await daemon.wait()


async def test_the_page_is_served_by_the_gateway(chat: Chat) -> None:
    async with httpx.AsyncClient(base_url=chat.url) as http:
        page = await http.get("/chat/")
        assert page.status_code == 200, page.text
        assert 'id="messages"' in page.text
        for asset, kind in (("/chat/chat.js", "javascript"), ("/chat/chat.css", "css")):
            response = await http.get(asset)
            assert response.status_code == 200 and kind in response.headers["content-type"]


async def test_two_pages_talk_and_the_daemon_answers(chat: Chat) -> None:
    room = new_room()
    ann, bob = await chat.open(room), await chat.open(room)

    # Markup in a message is text, never markup.
    hello = "hello from ann <b>not bold</b> <img src=x onerror=window.pwned=1>"
    await ann.say("ann", hello)
    await bob.wait_for_message("ann", hello)
    await ann.wait_for_message("ann", hello)
    assert await ann.evaluate("document.querySelector('#text').value") == ""  # sent: cleared
    assert await ann.evaluate("document.querySelector('#error').hidden")

    await bob.say("bob", "/upper hello")
    for page in (ann, bob):
        await page.wait_for_message("upper-bot", "HELLO")
    expected = [["ann", hello], ["bob", "/upper hello"], ["upper-bot", "HELLO"]]
    for page in (ann, bob):
        assert await page.shown() == expected
        assert await page.evaluate("!document.querySelector('#messages b, #messages img')")
        assert await page.evaluate("window.pwned === undefined")
        assert await page.call("problems") == []


async def test_a_message_against_the_contract_shows_the_error(chat: Chat) -> None:
    room = new_room()
    ann, bob = await chat.open(room), await chat.open(room)

    await ann.say("ann", "")  # text must have 1..2000 characters
    assert not await ann.evaluate("document.querySelector('#error').hidden")
    error = await ann.evaluate("document.querySelector('#error').textContent")
    assert "422" in error and "/text" in error, error
    invalid = await ann.evaluate("document.querySelector('#text').getAttribute('aria-invalid')")
    assert invalid == "true"

    # Nothing was published: the next message is the first either page shows.
    await ann.say("ann", "now with text")
    assert await ann.evaluate("document.querySelector('#error').hidden")
    await bob.wait_for_message("ann", "now with text")
    assert await bob.shown() == [["ann", "now with text"]]


async def test_entering_shows_the_history_once_then_what_follows(chat: Chat) -> None:
    room = new_room()
    ann = await chat.open(room)
    for n in range(3):
        await ann.say("ann", f"before {n}")
    await ann.wait_for_count(3)

    # A page opened later shows the room's history, then what is said next, each once.
    late = await chat.open(room)
    await late.wait_for_count(3)
    await ann.say("ann", "after")
    await late.wait_for_message("ann", "after")
    assert await late.shown() == [["ann", f"before {n}"] for n in range(3)] + [["ann", "after"]]

    # Another room says nothing here; a reload shows the same history again.
    other = await chat.open(new_room())
    await other.say("ann", "elsewhere")
    await other.wait_for_message("ann", "elsewhere")
    await ann.call("reload")
    await ann.live()
    await ann.wait_for_message("ann", "after")
    assert await ann.shown() == await late.shown()


async def test_the_daemon_ignores_malformed_messages_and_its_own(chat: Chat) -> None:
    room = new_room()
    topic = f"chat.room.{room}"
    connection = await aio_pika.connect(chat.broker_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("gateway.topics")
        for body in (
            b"not json",
            b"[1, 2]",
            b'{"from": 7, "text": "/upper number"}',
            b'{"from": "upper-bot", "text": "/upper loop"}',  # its own name: no answer
            b'{"from": "cy", "text": "/upper after"}',
        ):
            await exchange.publish(
                aio_pika.Message(body, content_type="application/json"), routing_key=topic
            )
    # Follow the room by long-poll until the daemon's answer; off-contract messages never
    # reach subscribers, and the daemon answered only the last message.
    seen: list[dict[str, str]] = []
    async with httpx.AsyncClient(base_url=chat.url, timeout=60) as http:
        after = 0
        while not any(m == {"from": "upper-bot", "text": "AFTER"} for m in seen):
            page = await http.get(f"/v1/topics/{topic}/events", params={"after": after, "wait": 30})
            assert page.status_code == 200, page.text
            seen += [event["data"] for event in page.json()["events"]]
            after = page.json()["next"]
    assert seen == [
        {"from": "upper-bot", "text": "/upper loop"},
        {"from": "cy", "text": "/upper after"},
        {"from": "upper-bot", "text": "AFTER"},
    ]
    assert chat.daemon.returncode is None


async def test_with_auth_on_the_page_uses_a_key_and_subscribe_tokens(
    rabbit: RabbitNode, tmp_path: Path, chromium: Chromium
) -> None:
    key = secrets.token_urlsafe(16)
    keys = tmp_path / "keys.json"
    scopes = ["topics:publish:chat.room", "topics:subscribe:chat.room"]
    keys.write_text(json.dumps({"keys": [{"key": key, "subject": "chat", "scopes": scopes}]}))
    settings, ops = chat_settings(
        tmp_path,
        rabbit.add_vhost("chat-auth-" + secrets.token_hex(3)),
        auth=AuthSettings(api_keys_file=keys),
    )
    room = new_room()
    async with serve_gateway(settings, ops) as gateway, chromium.pages_closed_after():
        page = ChatPage(chromium, await chromium.open(f"{gateway.url}/chat/#{room}"))
        # Without a key the stream is refused (401), and the page says so.
        await page.wait_for("document.querySelector('#status').dataset.state === 'error'")
        # Note the URLs the page opens streams at from here on.
        await page.evaluate(
            "window.opened = [], window.EventSource = class extends EventSource {"
            " constructor(url, options) { super(url, options); opened.push(String(url)); } }"
        )
        await page.call("click", "#auth summary")
        await page.call("fill", "#token", key)
        await page.call("click", "#enter")
        await page.live()
        await page.say("ann", "with a key")
        await page.wait_for_message("ann", "with a key")
        # The key went only into fetch headers; the stream was opened with a token.
        opened = await page.evaluate("window.opened")
        assert opened and "access_token=" in opened[-1], opened
        assert not any(key in url for url in opened)
