"""The console (/console/) as people use it, in real headless Chromium: every operation's
form (the example contracts, and test contracts in tests/console/ using every schema
feature) filled, submitted and followed live to its result; validation inline with the
API's own paths; cancel; the jobs list and a shared job link; live operation figures;
topics; keys; a broker that is down; behind nginx. axe-core checks every page, and
screenshots of each land in var/console-screenshots/ (one is in the README).

The test only knows the console's markup (data-path fields, classes the pages keep);
nothing in it is per contract but the example bodies, which come from the vectors."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import AuthSettings, Settings
from gateway.console import STATIC
from tests.browser import AXE, Chromium, Page, browser_missing, running_chromium
from tests.nginx_support import nginx_binary, run_nginx
from tests.polyglot import JS_WORKER, PERL_WORKER, PYTHON_WORKERS, start_worker
from tests.support import ROOT, RabbitNode, RunningGateway, free_port, serve_gateway

pytestmark = pytest.mark.timeout(300)

TEST_CONTRACTS = ROOT / "tests" / "console"
TEST_WORKER = TEST_CONTRACTS / "worker.py"
SHOTS = ROOT / "var" / "console-screenshots"
EXAMPLE_OPS = sorted(p.stem for p in (ROOT / "schemas" / "ops").glob("*.json"))
TEST_OPS = ["console.kitchen", "console.shapes", "console.either"]
IDLE_OP = "console.idle"
OWN_CODE_LIMIT = 150 * 1024

# Example bodies for the test contracts (the example contracts' come from their vectors).
TEST_BODIES: dict[str, dict[str, Any]] = {
    "console.kitchen": {
        "name": "Ann O'Hara",
        "email": "ann@example.org",
        "day": "2026-12-02",
        "code": "ABC",
        "count": 3,
        "ratio": 0.5,
        "urgent": True,
        "level": "high",
        "address": {"city": "Zürich", "zip": "80331"},
        "tags": ["red", "blue"],
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
        "steps": 4,
        "step_seconds": 0.2,
    },
    "console.shapes": {
        "note": "shapes",
        "target": {"queue": "inbox"},
        "labels": {"env": "test"},
    },
    "console.either": {"add": [1, 2.5]},
}

# A recorder for things that may show only for a moment (a progress bar mid-job).
WATCH_PROGRESS = """() => {
  window.sawProgress = [];
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll('progress.job-progress')) {
      if (bar.value > 0) window.sawProgress.push([bar.value, bar.max]);
    }
  }).observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


def example_body(op: str) -> Any:
    """The request a test fills in: the valid vector with the most in it."""
    if op in TEST_BODIES:
        return TEST_BODIES[op]
    vectors = orjson.loads((ROOT / "schemas" / "vectors" / f"{op}.json").read_bytes())
    valid = [c["data"] for c in vectors["cases"] if c.get("valid") and c["definition"] == "request"]
    return max(valid, key=lambda body: len(orjson.dumps(body)))


class ConsolePage(Page):
    async def shot(self, name: str) -> Path:
        """A screenshot a person can open: var/console-screenshots/<name>.png."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.call("screenshot", {"path": str(path), "fullPage": True})
        return path

    async def serious_violations(self) -> list[str]:
        """axe-core's serious and critical findings on the page as it is now."""
        if not await self.evaluate("typeof window.axe === 'object'"):
            # Evaluated by the page's own eval: the page's CSP allows no injected <script>.
            await self.evaluate(f"(0, eval)({json.dumps(AXE.read_text())})")
        found: list[str] = await self.evaluate(
            """axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations
                 .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => `${v.impact} ${v.id}: ${v.help} at `
                   + v.nodes.map((n) => n.target.join(' ')).join(', ')))"""
        )
        return found

    async def text(self, selector: str) -> str:
        text: str = await self.evaluate(
            f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"
        )
        return text

    async def count(self, selector: str) -> int:
        count: int = await self.evaluate(
            f"document.querySelectorAll({json.dumps(selector)}).length"
        )
        return count

    async def wait_for_selector(self, selector: str) -> None:
        await self.call("waitForSelector", selector)

    async def field(self, path: str) -> str:
        """The selector of the input of the field at JSON pointer `path`."""
        wrapper = f'[data-path="{path}"]'
        await self.wait_for_selector(wrapper)
        return f"{wrapper} :is(input, select, textarea)"

    async def fill_form(self, body: Any) -> bool:
        """Fill the form with `body`, field by field; False if the form has no field for
        some part of it (then the JSON editor is what holds it)."""
        if not isinstance(body, dict) or not body:
            return False
        missing = [
            key
            for key in body
            if not await self.evaluate(f"!!document.querySelector('[data-path=\"/{key}\"]')")
        ]
        if missing:
            return False
        await self._fill("", body)
        return True

    async def _fill(self, path: str, value: Any) -> None:
        if isinstance(value, dict) and await self._is_form_object(path):
            for key, item in value.items():
                await self._fill(f"{path}/{key}", item)
        elif isinstance(value, list) and await self._is_form_array(path):
            add = f'[data-path="{path}"] >> button:text-is("Add")'
            while (before := await self._items(path)) < len(value):
                await self.call("click", add)
                await self.wait_for(f"{self._items_js(path)} > {before}")
            for index, item in enumerate(value):
                await self._fill(f"{path}/{index}", item)
        else:
            await self._fill_scalar(path, value)

    def _items_js(self, path: str) -> str:
        # The array's own items: wrappers at `<path>/<index>` exactly.
        return (
            f"[...document.querySelectorAll('[data-path^=\"{path}/\"]')]"
            f".filter((e) => /^\\d+$/.test(e.dataset.path.slice({len(path) + 1}))).length"
        )

    async def _items(self, path: str) -> int:
        items: int = await self.evaluate(self._items_js(path))
        return items

    async def _is_form_object(self, path: str) -> bool:
        # An object the form renders field by field (not as one JSON box).
        found: bool = await self.evaluate(
            f"!!document.querySelector('[data-path^=\"{path}/\"]')"
            if path
            else "!!document.querySelector('[data-path]')"
        )
        return found

    async def _is_form_array(self, path: str) -> bool:
        found: bool = await self.evaluate(
            f"!!document.querySelector('[data-path=\"{path}\"] button')"
            f" && !document.querySelector('[data-path=\"{path}\"] > textarea')"
        )
        return found

    async def _fill_scalar(self, path: str, value: Any) -> None:
        selector = await self.field(path)
        kind = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " return e.tagName === 'INPUT' ? e.type : e.tagName.toLowerCase(); })()"
        )
        if kind == "checkbox":
            await self.call("setChecked", selector, bool(value))
        elif kind == "select":
            await self.call("selectOption", selector, {"label": str(value)})
        elif kind == "textarea" and not isinstance(value, str):
            await self.call("fill", selector, json.dumps(value))
        else:
            await self.call(
                "fill", selector, value if isinstance(value, str) else json.dumps(value)
            )

    async def use_json(self, body: Any) -> None:
        await self.call("click", ".mode-json")
        await self.call("fill", "textarea.json-editor", json.dumps(body, indent=2))

    async def json_value(self) -> Any:
        """What the form holds, as the JSON editor shows it (switching to it and back)."""
        await self.call("click", ".mode-json")
        text = await self.evaluate("document.querySelector('textarea.json-editor').value")
        await self.call("click", ".mode-form")
        return json.loads(text)

    async def job_id(self) -> str:
        await self.wait_for_selector("[data-job-id]")
        job_id: str = await self.evaluate("document.querySelector('[data-job-id]').dataset.jobId")
        return job_id

    async def wait_for_status(self, status: str) -> None:
        await self.wait_for_selector(f'.job-status[data-status="{status}"]')


@dataclass
class Site:
    gateway: RunningGateway
    chromium: Chromium
    broker_url: str

    @property
    def url(self) -> str:
        return self.gateway.url

    async def open(self, path: str = "", **options: Any) -> ConsolePage:
        page = ConsolePage(
            self.chromium, await self.chromium.open(f"{self.url}/console/{path}", **options)
        )
        await page.wait_for_selector("main h1")
        return page

    def client(self) -> httpx.AsyncClient:
        return self.gateway.client()


def console_settings(tmp: Path, broker_url: str, **overrides: Any) -> Settings:
    contracts = tmp / "contracts"
    contracts.mkdir()
    for source in [*(ROOT / "schemas" / "ops").glob("*.json"), *TEST_CONTRACTS.glob("*.json")]:
        shutil.copy(source, contracts / source.name)
    settings = Settings(
        broker_url=broker_url,
        contracts_dir=contracts,
        topics_dir=ROOT / "schemas" / "topics",
        store_url=f"sqlite:///{tmp / 'store.sqlite3'}",
        sse_ping_seconds=1.0,
    )
    return replace(settings, **overrides)


def worker_env(broker_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_BROKER_URL": broker_url,
        "PYTHONPATH": str(ROOT),
        "PERL5LIB": os.pathsep.join(
            filter(None, [str(ROOT / "clients/perl/lib"), os.environ.get("PERL5LIB")])
        ),
    }


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Chromium]:
    if missing := browser_missing():
        pytest.skip("no " + ", no ".join(missing))
    async with running_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
async def site(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory, chromium: Chromium
) -> AsyncIterator[Site]:
    """A gateway with the example and test contracts, the example workers (Python and
    Perl) and the test worker, on a virtual host of their own; and Chromium."""
    broker_url = rabbit.add_vhost("console-" + secrets.token_hex(3))
    settings = console_settings(tmp_path_factory.mktemp("console"), broker_url)
    ops = {op: op for op in [*EXAMPLE_OPS, *TEST_OPS, IDLE_OP]}
    env = worker_env(broker_url)
    async with serve_gateway(settings, ops) as gateway, chromium.pages_closed_after():
        commands = [
            *([sys.executable, str(ROOT / "examples/workers" / s)] for s in PYTHON_WORKERS),
            [sys.executable, str(TEST_WORKER)],
            *([["perl", str(PERL_WORKER)]] if shutil.which("perl") else []),
            ["node", str(JS_WORKER)],
        ]
        workers = [await start_worker(command, env) for command in commands]
        try:
            yield Site(gateway, chromium, broker_url)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                await worker.wait()


@pytest.mark.parametrize("op", [*EXAMPLE_OPS, *TEST_OPS])
async def test_every_operation_form_fills_submits_and_shows_the_result_live(
    site: Site, op: str
) -> None:
    body = example_body(op)
    page = await site.open(f"ops/{op}")
    await page.wait_for_selector(".mode-json")
    if await page.fill_form(body):
        shown = await page.json_value()
        # The form holds exactly the body, plus the defaults it filled in by itself.
        assert {k: shown[k] for k in body} == body
        defaults = set(shown) - set(body)
        contract = (await site.client().get(f"/v1/ops/{op}")).json()
        properties = contract["definitions"]["request"].get("properties", {})
        assert all("default" in properties[k] for k in defaults), defaults
    else:
        await page.use_json(body)
    await page.wait_for(
        "document.querySelector('.validation-summary').textContent.trim()"
        " === 'Valid against the contract.'"
    )
    await page.evaluate(f"({WATCH_PROGRESS})()")
    await page.call("click", "button[type=submit]")
    job_id = await page.job_id()
    await page.wait_for_status("succeeded")
    async with site.client() as http:
        job = (await http.get(f"/v1/jobs/{job_id}")).json()
        events = (await http.get(f"/v1/jobs/{job_id}/events")).json()["events"]
    assert job["status"] == "succeeded"
    shown_result = await page.text(".job-result")
    for leaf in leaves(job["result"]):
        assert leaf in shown_result, (leaf, shown_result)
    # The timeline comes from the event stream: every event, in order.
    timeline = "document.querySelectorAll('.job-timeline li').length"
    await page.wait_for(f"{timeline} === {len(events)}")
    progress = [e for e in events if e["type"] == "progress"]
    if progress:
        # Seen live: the bar moved before the job ended, as the worker reported.
        seen = await page.evaluate("window.sawProgress")
        assert seen, "no progress bar was shown"
        assert seen[-1][1] == progress[-1]["data"]["total"]
    types = await page.evaluate(
        "[...document.querySelectorAll('.job-timeline li')].map((li) => li.dataset.type)"
    )
    assert types == [e["type"] for e in events]
    assert await page.problems() == []


def leaves(value: Any) -> list[str]:
    """The scalar leaves of a JSON value, as text a tree would show."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    if isinstance(value, str):
        return [value]
    return [json.dumps(value)] if isinstance(value, bool | type(None)) else [str(value)]


async def listed(site: Site, op: str) -> list[str]:
    async with site.client() as http:
        answer = await http.get("/v1/jobs", params={"op": op, "limit": 100})
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()["jobs"]]


async def test_an_invalid_field_shows_the_apis_paths_inline_before_anything_is_sent(
    site: Site,
) -> None:
    op = "console.kitchen"
    bad = {**TEST_BODIES[op], "code": "abc", "count": 11, "address": {"city": "X", "zip": "12"}}
    bad["items"] = [{"sku": "A-1", "qty": 0}]
    async with site.client() as http:
        refused = await http.post(f"/v1/ops/{op}", json=bad)
    assert refused.status_code == 422
    api_paths = [d["path"] for d in refused.json()["error"]["details"]]
    jobs_before = await listed(site, op)

    page = await site.open(f"ops/{op}")
    assert await page.fill_form(bad)
    summary = (
        "[...document.querySelectorAll('.validation-summary li code')].map((c) => c.textContent)"
    )
    # Checked as the person types (a moment after the last key): the API's paths, in order.
    try:
        compact = json.dumps(api_paths, separators=(",", ":"))
        await page.wait_for(f"JSON.stringify({summary}) === {json.dumps(compact)}")
    except AssertionError:
        assert await page.evaluate(summary) == api_paths, await page.text(".validation-summary")
    for path in api_paths:
        inline = await page.text(f'[data-path="{path}"] .field-error')
        assert path in inline, (path, inline)
        invalid = await page.evaluate(
            f'document.querySelector(\'[data-path="{path}"] [aria-invalid="true"]\') !== null'
        )
        assert invalid, path
    await page.call("click", "button[type=submit]")
    # Submit with errors: the first invalid field gets the focus; nothing is sent.
    focused = "document.activeElement?.getAttribute('aria-invalid') === 'true'"
    try:
        await page.wait_for(focused)
    except AssertionError:
        raise AssertionError(
            [await page.evaluate("document.activeElement?.outerHTML"), await page.problems()]
        ) from None
    assert await page.count("[data-job-id]") == 0
    assert await listed(site, op) == jobs_before
    await page.shot("call-invalid")
    assert await page.serious_violations() == []


async def test_cancel_stops_a_long_job_and_the_list_and_a_shared_link_find_it(
    site: Site,
) -> None:
    page = await site.open("ops/report.generate")
    assert await page.fill_form({"title": "Long", "sections": 100, "seconds_per_section": 1})
    await page.call("click", "button[type=submit]")
    job_id = await page.job_id()
    await page.wait_for_status("running")
    await page.wait_for_selector("progress.job-progress")
    await page.shot("call-running")
    await page.call("click", "button.job-cancel")
    await page.wait_for_status("cancelled")
    assert await page.count("button.job-cancel") == 0
    async with site.client() as http:
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"

    jobs = await site.open("jobs")
    await jobs.call("selectOption", "#jobs-op", "report.generate")
    await jobs.call("selectOption", "#jobs-status", "cancelled")
    await jobs.wait_for_selector(f'tr[data-job-id="{job_id}"][data-status="cancelled"]')
    statuses = await jobs.evaluate(
        "[...document.querySelectorAll('table.jobs-list tr[data-job-id]')]"
        ".map((tr) => tr.dataset.status)"
    )
    assert set(statuses) == {"cancelled"}
    assert "op=report.generate" in await jobs.evaluate("location.search")
    await jobs.shot("jobs")
    assert await jobs.serious_violations() == []

    # The link people share: a page of its own, with the whole timeline.
    shared = await site.open(f"jobs/{job_id}")
    await shared.wait_for_selector('.job-timeline li[data-type="cancelled"]')
    async with site.client() as http:
        events = (await http.get(f"/v1/jobs/{job_id}/events")).json()["events"]
    shown = await shared.evaluate(
        "[...document.querySelectorAll('.job-timeline li')]"
        ".map((li) => [Number(li.dataset.seq), li.dataset.type])"
    )
    assert shown == [[e["seq"], e["type"]] for e in events]
    await shared.shot("job")
    assert await shared.serious_violations() == []
    assert await page.problems() == [] and await shared.problems() == []


async def test_the_jobs_list_pages_newest_first(site: Site) -> None:
    async with site.client() as http:
        made = [
            (await http.post("/v1/ops/console.idle", json={"n": n})).json()["id"] for n in range(30)
        ]
    page = await site.open(f"jobs?op={IDLE_OP}&status=queued")
    rows = "[...document.querySelectorAll('table.jobs-list tr[data-job-id]')]"
    await page.wait_for(f"{rows}.length > 0")
    while await page.count("button.jobs-more"):
        before = await page.count("table.jobs-list tr[data-job-id]")
        if before >= len(made):
            break
        await page.call("click", "button.jobs-more")
        await page.wait_for(f"{rows}.length > {before}")
    shown = await page.evaluate(f"{rows}.map((tr) => tr.dataset.jobId)")
    assert shown[: len(made)] == made[::-1]


async def test_the_operations_page_shows_live_figures(site: Site) -> None:
    page = await site.open("")
    for op in [*EXAMPLE_OPS, *TEST_OPS, IDLE_OP]:
        await page.wait_for_selector(f'[data-op="{op}"] a[href$="ops/{op}"]')
    await page.wait_for(
        "/[1-9]/.test(document.querySelector('[data-op=\"math.add\"] .op-consumers').textContent)"
    )
    idle = '[data-op="console.idle"]'
    assert "no worker" in (await page.text(f"{idle} .op-consumers")).lower()
    queued = await page.evaluate(
        f"Number(document.querySelector('{idle} .op-messages')"
        ".textContent.match(/\\d+/)?.[0] ?? -1)"
    )
    assert queued >= 0
    async with site.client() as http:
        for n in range(3):
            assert (await http.post(f"/v1/ops/{IDLE_OP}", json={"n": n})).status_code == 202
    # Refreshed in place, without a reload: the queue grew by the three.
    await page.wait_for(
        f"Number(document.querySelector('{idle} .op-messages').textContent.match(/\\d+/)?.[0]) "
        f"=== {queued + 3}"
    )
    await page.shot("operations")
    assert await page.serious_violations() == []
    assert await page.problems() == []


async def test_the_topics_page_subscribes_and_publishes_from_the_message_form(
    site: Site,
) -> None:
    key = f"chat.room.{secrets.token_hex(3)}"
    page = await site.open("topics/chat.room")
    await page.call("fill", "#topic-key", key)
    # From the (empty) history of a fresh key: "new only" would start wherever the stream
    # stands when the page asks, which a publish right after the click could precede.
    await page.call("check", "input[name=from][value=history]")
    await page.call("click", "button:text-is('Subscribe')")
    async with site.client() as http:
        assert await page.fill_form({"from": "console", "text": "from the form"})
        await page.call("click", "button:text-is('Publish')")
        await page.wait_for_selector("ol.topic-messages li[data-seq]")
        sent = await http.post(f"/v1/topics/{key}", json={"from": "curl", "text": "from curl"})
        assert sent.status_code == 202
    await page.wait_for("document.querySelectorAll('ol.topic-messages li[data-seq]').length === 2")
    shown = await page.text("ol.topic-messages")
    assert shown.index("from the form") < shown.index("from curl")
    await page.shot("topics")
    assert await page.serious_violations() == []
    assert await page.problems() == []


async def test_keyboard_only_a_person_fills_and_submits(site: Site) -> None:
    page = await site.open("ops/math.add")
    a = await page.field("/a")
    await page.call("focus", a)
    await page.call("keyboard.type", "20")
    await page.call("keyboard.press", "Tab")
    focused_b = await page.evaluate(
        "document.activeElement === document.querySelector('[data-path=\"/b\"] input')"
    )
    assert focused_b, "Tab did not lead from a to b"
    await page.call("keyboard.type", "22")
    await page.call("keyboard.press", "Enter")
    await page.wait_for_status("succeeded")
    assert "42" in await page.text(".job-result")
    # Status changes are said in the live region.
    await page.wait_for("/succeeded/i.test(document.querySelector('[aria-live]').textContent)")


async def test_copy_as_curl_python_javascript_and_perl_run_as_shown(site: Site) -> None:
    page = await site.open("ops/math.add")
    assert await page.fill_form({"a": 2, "b": 40})
    snippet = "document.querySelector('pre.snippet[data-lang=\"{}\"]')?.textContent"
    env = {**worker_env(site.broker_url), "GATEWAY_URL": site.url}
    runs = {
        "curl": ["bash", "-c"],
        "python": [sys.executable, "-c"],
        "perl": ["perl", "-e"],
        "javascript": ["node", "--input-type=module", "-e"],
    }
    for lang, command in runs.items():
        await page.call("click", f'.copy-as [role=tab][data-lang="{lang}"]')
        # The snippet follows the form (as it changes, a moment later).
        await page.wait_for(f"({snippet.format(lang)} ?? '').includes('40')")
        text = await page.evaluate(snippet.format(lang))
        process = await asyncio.create_subprocess_exec(
            *command,
            text,
            env=env,
            cwd=ROOT / "clients" / "js" if lang == "javascript" else ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        assert process.returncode == 0, (lang, text, err.decode())
        assert "42" in out.decode(), (lang, text, out.decode())
    await page.shot("call")
    assert await page.serious_violations() == []


async def test_a_narrow_window_reads_without_scrolling_sideways(site: Site) -> None:
    for path, name in [("", "operations-narrow"), ("ops/console.kitchen", "call-narrow")]:
        page = await site.open(path, viewport={"width": 360, "height": 740})
        await page.wait_for_selector("[data-op], [data-path]")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{path or 'operations'} is {width} px wide in a 360 px window"
        await page.shot(name)


async def test_a_broker_that_is_down_is_said_plainly(tmp_path: Path, chromium: Chromium) -> None:
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    settings = console_settings(tmp_path, nowhere)
    async with (
        serve_gateway(settings, {}, wait_for_broker=False, take_over=False) as gateway,
        chromium.pages_closed_after(),
    ):
        page = ConsolePage(chromium, await chromium.open(f"{gateway.url}/console/"))
        await page.wait_for_selector("#broker:not([hidden])")
        assert "broker" in (await page.text("#broker")).lower()
        await page.wait_for_selector("main h1")
        await page.shot("broker-down")
        assert await page.serious_violations() == []


async def test_with_auth_on_the_page_asks_for_a_key_once_and_keeps_it_to_the_tab(
    rabbit: RabbitNode, tmp_path: Path, chromium: Chromium
) -> None:
    full, narrow = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    keys = tmp_path / "keys.json"
    keys.write_bytes(
        orjson.dumps(
            {
                "keys": [
                    {"key": full, "subject": "ann", "scopes": ["ops:*"]},
                    {"key": narrow, "subject": "bob", "scopes": ["ops:math.add"]},
                ]
            }
        )
    )
    broker_url = rabbit.add_vhost("console-auth-" + secrets.token_hex(3))
    settings = console_settings(tmp_path, broker_url, auth=AuthSettings(api_keys_file=keys))
    async with serve_gateway(settings, {}) as gateway, chromium.pages_closed_after():
        page = ConsolePage(chromium, await chromium.open(f"{gateway.url}/console/"))
        # Not signed in: said as such, with the place to give a key.
        await page.wait_for_selector("main .error")
        assert "401" in await page.text("main .error")
        await page.call("fill", "#api-key", narrow)
        await page.call("press", "#api-key", "Enter")
        await page.wait_for_selector('[data-op="math.add"]')
        assert "key:bob" in await page.text("#who")
        assert narrow not in await page.evaluate("location.href")
        assert await page.evaluate("sessionStorage.length") == 1
        # A reload keeps the key (this tab only); an operation out of scope is a 403.
        await page.call("goto", f"{gateway.url}/console/ops/report.generate")
        await page.wait_for_selector("main h1")
        assert await page.fill_form({"title": "T"})
        await page.call("click", "button[type=submit]")
        await page.wait_for_selector("main .error")
        assert "403" in await page.text("main .error")
        await page.shot("auth-forbidden")
        assert await page.serious_violations() == []
        assert full not in (await gateway.client().get("/metrics")).text


async def test_behind_nginx_the_console_runs_a_job_live(site: Site, tmp_path: Path) -> None:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed")
    upstream = site.url.removeprefix("http://")
    async with run_nginx(binary, tmp_path / "nginx", [upstream]) as nginx:
        page = ConsolePage(
            site.chromium, await site.chromium.open(f"{nginx.url}/console/ops/report.generate")
        )
        await page.wait_for_selector("main h1")
        assert await page.fill_form({"title": "Proxied", "sections": 3, "seconds_per_section": 0.3})
        await page.evaluate(f"({WATCH_PROGRESS})()")
        await page.call("click", "button[type=submit]")
        await page.wait_for_status("succeeded")
        assert await page.evaluate("window.sawProgress.length") > 0
        assert await page.problems() == []


async def test_the_console_is_light_and_can_be_turned_off(
    site: Site, rabbit: RabbitNode, tmp_path: Path
) -> None:
    own = [
        p
        for p in STATIC.rglob("*")
        if p.is_file() and not {"client", "vendor"} & set(p.relative_to(STATIC).parts)
    ]
    weight = sum(p.stat().st_size for p in own)
    assert weight <= OWN_CODE_LIMIT, f"the console's own code is {weight} bytes"
    async with site.client() as http:
        page = await http.get("/console/jobs/some-id")
        assert page.status_code == 200 and '<base href="../">' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await http.get("/console")).status_code == 308
        assert (await http.get("/console/client/index.js")).status_code == 200
        assert (await http.get("/console/client/../../__init__.py")).status_code == 404
    settings = console_settings(
        tmp_path, rabbit.add_vhost("off-" + secrets.token_hex(3)), console=False
    )
    async with serve_gateway(settings, {}) as gateway, gateway.client() as http:
        assert (await http.get("/console/")).status_code == 404
