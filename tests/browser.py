"""Real headless Chromium for the page tests (the chat example, the console), driven
through playwright-core (the JS client's dev dependency, with the Chromium `make setup`
installs) by a small Node bridge that runs the page methods a test sends it as JSON
lines: the tests themselves stay in Python, beside the gateways they start."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT

PLAYWRIGHT = ROOT / "clients" / "js" / "node_modules" / "playwright-core"
AXE = ROOT / "clients" / "js" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
PAGE_TIMEOUT_MS = 30_000

# Runs Playwright calls the test sends on stdin, one JSON object a line:
# {"id", "page"?, "method", "args"}; "newPage" opens a page (in a context of its own, so
# pages share no storage; args[0] are its options, e.g. a viewport), "problems" lists a
# page's console errors, "closePages" closes every page (and so their streams); any other
# method is called on the page, a dotted one on the object it names ("keyboard.press").
# Each answer is a line {"id", "value"} or {"id", "error"}.
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
        const opened = await browser.newPage(args[0] ?? {});
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
        const names = method.split('.');
        let target = pages[page];
        for (const name of names.slice(0, -1)) target = target[name];
        value = await target[names.at(-1)](...args);
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
        for the streams its pages hold open (a topic's never ends by itself)."""
        try:
            yield
        finally:
            await self.call("closePages")

    async def open(self, url: str, **options: Any) -> int:
        """A new page (its index) at `url`; `options` are Playwright's newPage options."""
        index: int = await self.call("newPage", options)
        await self.call("goto", url, page=index)
        return index

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            async with asyncio.timeout(30):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class Page:
    """One page of the bridge."""

    chromium: Chromium
    index: int

    async def call(self, method: str, *args: Any) -> Any:
        return await self.chromium.call(method, *args, page=self.index)

    async def wait_for(self, expression: str) -> None:
        """Until `expression` (JavaScript, in the page) is true, checked on every frame."""
        await self.call("waitForFunction", expression)

    async def evaluate(self, expression: str) -> Any:
        return await self.call("evaluate", expression)

    async def problems(self) -> list[str]:
        """The page's console errors and uncaught exceptions so far."""
        problems: list[str] = await self.chromium.call("problems", page=self.index)
        return problems


def browser_missing() -> list[str]:
    """What the browser tests need and this machine lacks."""
    needs = (
        ("node", shutil.which("node") is not None),
        (f"Chromium at {CHROMIUM} (deploy/install-system-deps.sh chromium)", CHROMIUM.exists()),
        ("playwright-core (make setup: npm ci in clients/js)", PLAYWRIGHT.is_dir()),
    )
    return [what for what, present in needs if not present]


@asynccontextmanager
async def running_chromium() -> AsyncIterator[Chromium]:
    process = await asyncio.create_subprocess_exec(
        "node",
        "-e",
        BRIDGE,
        env={
            **os.environ,
            "PLAYWRIGHT_CORE": str(PLAYWRIGHT),
            "CHROMIUM_PATH": str(CHROMIUM),
            "PAGE_TIMEOUT_MS": str(PAGE_TIMEOUT_MS),
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        ready = await process.stdout.readline()
    assert json.loads(ready or b"{}").get("ready"), "the Chromium bridge did not start"
    browser = Chromium(process)
    try:
        yield browser
    finally:
        await browser.close()
