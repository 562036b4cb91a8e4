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
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from gateway.config import AuthSettings, Settings
from tests.polyglot import start_worker
from tests.support import ROOT, RabbitNode, make_settings, serve_gateway

CHAT = ROOT / "examples" / "chat"
DAEMON = ROOT / "examples" / "perl" / "chat_daemon.pl"
PLAYWRIGHT = ROOT / "clients" / "js" / "node_modules" / "playwright-core"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))

pytestmark = pytest.mark.timeout(180)

# Runs Playwright calls the test sends on stdin, one JSON object a line:
# {"id", "page"?, "method", "args"}; "newPage" opens a page (in a context of its own, so
# pages share no storage), "problems" lists a page's console errors, "closePages" closes
# every page (and so their streams); any other method is called on the page. Each answer
# is a line {"id", "value"} or {"id", "error"}.
BRIDGE = r"""
const readline = require('node:readline');
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const pages = [];
  const problems = [];
  const answer = (line) => process.stdout.write(JSON.stringify(line) + '\n');
  const plain = (v) => v === null || typeof v !== 'object' || Array.isArray(v)
    || Object.getPrototypeOf(v) === Object.prototype;
  answer({ ready: true });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const { id, page, method, args = [] } = JSON.parse(line);
    try {
      let value;
      if (method === 'newPage') {
        const opened = await browser.newPage();
        opened.setDefaultTimeout(Number(process.env.PAGE_TIMEOUT_MS));
        const index = pages.push(opened) - 1;
        problems[index] = [];
        opened.on('console', (m) => m.type() === 'error' && problems[index].push(m.text()));
        opened.on('pageerror', (e) => problems[index].push(String(e)));
        value = index;
      } else if (method === 'problems') {
        value = problems[page];
      } else if (method === 'closePages') {
        await Promise.all(pages.filter((p) => !p.isClosed()).map((p) => p.close()));
      } else {
        value = await pages[page][method](...args);
        if (value && typeof value.jsonValue === 'function') value = await value.jsonValue();
      }
      answer({ id, value: value === undefined || !plain(value) ? null : value });
    } catch (error) {
      answer({ id, error: String(error.message ?? error) });
    }
  }
  await browser.close();
})().catch((error) => { console.error(error); process.exit(1); });
"""

# What a page shows, as [from, text] pairs in order.
SHOWN = (
    "[...document.querySelectorAll('#messages li')]"
    ".map((li) => [li.querySelector('.from').textContent, li.querySelector('.text').textContent])"
)


class Chromium:
    """The bridge process, and calls to it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._ids = 0
        self._lock = asyncio.Lock()

    async def call(self, method: str, *args: Any, page: int | None = None) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self._lock:
            self._ids += 1
            request = {"id": self._ids, "page": page, "method": method, "args": list(args)}
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            await self.process.stdin.drain()
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the Chromium bridge exited")
        reply = json.loads(line)
        assert reply["id"] == self._ids
        if "error" in reply:
            problems = await self.call("problems", page=page) if page is not None else []
            raise AssertionError("\n".join([f"{method}{tuple(args)}: {reply['error']}", *problems]))
        return reply["value"]

    @asynccontextmanager
    async def pages_closed_after(self) -> AsyncIterator[None]:
        """Close every page at the end of the block: a gateway's graceful shutdown waits
        for the topic streams its pages hold open (they never end by themselves)."""
        try:
            yield
        finally:
            await self.call("closePages")

    async def new_page(self, url: str) -> ChatPage:
        page = ChatPage(self, await self.call("newPage"))
        await page.call("goto", url)
        return page


@dataclass
class ChatPage:
    chromium: Chromium
    index: int

    async def call(self, method: str, *args: Any) -> Any:
        return await self.chromium.call(method, *args, page=self.index)

    async def wait_for(self, expression: str) -> None:
        """Until `expression` (JavaScript, in the page) is true, checked on every frame."""
        await self.call("waitForFunction", expression)

    async def evaluate(self, expression: str) -> Any:
        return await self.call("evaluate", expression)

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
        page = await self.chromium.new_page(self.room_url(room))
        await page.live()
        return page


def new_room() -> str:
    return "r-" + secrets.token_hex(4)


def browser_missing() -> list[str]:
    """What the browser tests need and this machine lacks."""
    needs = (
        ("node", shutil.which("node") is not None),
        (f"Chromium at {CHROMIUM} (deploy/install-system-deps.sh chromium)", CHROMIUM.exists()),
        ("playwright-core (make setup: npm ci in clients/js)", PLAYWRIGHT.is_dir()),
    )
    return [what for what, present in needs if not present]


async def start_chromium() -> Chromium:
    process = await asyncio.create_subprocess_exec(
        "node",
        "-e",
        BRIDGE,
        env={
            **os.environ,
            "PLAYWRIGHT_CORE": str(PLAYWRIGHT),
            "CHROMIUM_PATH": str(CHROMIUM),
            "PAGE_TIMEOUT_MS": "30000",
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        ready = await process.stdout.readline()
    assert json.loads(ready or b"{}").get("ready"), "the Chromium bridge did not start"
    return Chromium(process)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Chromium]:
    if missing := browser_missing() + ([] if shutil.which("perl") else ["perl"]):
        pytest.skip("no " + ", no ".join(missing))
    browser = await start_chromium()
    try:
        yield browser
    finally:
        assert browser.process.stdin is not None
        browser.process.stdin.close()
        try:
            async with asyncio.timeout(30):
                await browser.process.wait()
        except TimeoutError:
            browser.process.kill()
            await browser.process.wait()


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
        page = await chromium.new_page(f"{gateway.url}/chat/#{room}")
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
