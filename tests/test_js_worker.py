"""The JavaScript worker kit (clients/js/src/worker.js) proves what the Python and Perl
kits prove: a cancel reaches a running handler, heartbeats carry a job past its lease, a
request past its deadline is skipped unrun. And beside that: a running job aborted at its
deadline; a request of a job cancelled before it came, skipped; a quick job acked only
after its answer (a killed worker's job is redelivered and finished); error answers from
`JobFailed` and from a bug; progress; a request that is not JSON; own-answer validation
against the contract; reconnection; a graceful shutdown; requests not from the gateway's
user rejected; W3C trace context on every answer. A real gateway, a real RabbitMQ and a
real Node process (tests/node/worker.mjs) whose stdout lines the tests await."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from tests.support import (
    ROOT,
    RabbitNode,
    RunningGateway,
    TcpProxy,
    WorkerProcess,
    make_settings,
    serve_gateway,
)

WORKER = ROOT / "tests" / "node" / "worker.mjs"
KIT = ROOT / "clients" / "js" / "src" / "worker.js"
LEASE_SECONDS = 3  # heartbeats every second; a loaded machine may delay one a bit
GATEWAY_USER = "guest"  # the test node's only user: the gateway's, and ours
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def contract(
    result: dict[str, object] | None = None,
    progress: dict[str, object] | None = None,
    **settings: object,
) -> dict[str, object]:
    definitions: dict[str, object] = {"request": {"type": "object"}, "result": result or {}}
    if progress is not None:
        definitions["progress"] = progress
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "x-gateway": settings,
        "definitions": definitions,
    }


STRICT = contract(
    result={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
    progress={"type": "object", "required": ["done"], "properties": {"done": {"type": "integer"}}},
)


@dataclass
class Served:
    gw: RunningGateway
    rabbit: RabbitNode
    start_worker: Callable[..., Awaitable[WorkerProcess]]
    worker: WorkerProcess

    def op(self, role: str) -> str:
        return self.gw.op(role)


@pytest.fixture
async def js(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[Served]:
    """A gateway with contracts of our own, and the Node worker serving them."""
    assert shutil.which("node"), "node is required"
    settings, ops = make_settings(
        tmp_path,
        rabbit.url,
        {
            "wait": contract(),
            "slow": contract(lease_seconds=LEASE_SECONDS),
            "echo": contract(),
            "strict": STRICT,
        },
        sweep_interval_seconds=0.2,  # a lease that lapsed is noticed at once
    )
    roles = [f"{role}={ops[role]}" for role in ("wait", "slow", "echo", "strict")]
    roles.append(f"contract={settings.contracts_dir / (ops['strict'] + '.json')}")
    workers: list[WorkerProcess] = []

    async def start_worker(broker_url: str = rabbit.url) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(WORKER),
            *roles,
            env={**os.environ, "GATEWAY_BROKER_URL": broker_url, "GATEWAY_USER": GATEWAY_USER},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = WorkerProcess(process)
        workers.append(worker)
        await worker.line("log info serving")
        return worker

    async with serve_gateway(settings, ops) as gw:
        try:
            yield Served(gw, rabbit, start_worker, await start_worker())
        finally:
            for worker in workers:
                await worker.stop()


async def publish(
    channel: aio_pika.abc.AbstractChannel,
    op: str,
    body: bytes,
    *,
    job_id: str,
    reply_to: str,
    headers: dict[str, object] | None = None,
    user_id: str | None = GATEWAY_USER,
) -> None:
    """A request put straight into the operation's queue, shaped as the gateway's."""
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=job_id,
            message_id=job_id,
            reply_to=reply_to,
            type=op,
            user_id=user_id,
            headers={"x-attempt": 1, **(headers or {})},  # type: ignore[dict-item]
        ),
        routing_key=op,
    )


async def take(
    queue: AbstractQueue, count: int, limit: float = 30
) -> list[AbstractIncomingMessage]:
    """The next `count` answers in `queue`, acked."""
    answers = []
    async with queue.iterator() as messages, asyncio.timeout(limit):
        async for message in messages:
            await message.ack()
            answers.append(message)
            if len(answers) == count:
                break
    return answers


async def queue_left(rabbit: RabbitNode, op: str) -> int:
    """Requests left ready in the operation's queue (unacked ones are counted only once
    their worker is gone, when RabbitMQ requeues them)."""
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(op, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


async def test_cancel_reaches_a_running_handler(js: Served) -> None:
    async with js.gw.client() as http:
        r = await http.post(f"/v1/ops/{js.op('wait')}", json={})
        location, job_id = r.headers["location"], r.json()["id"]
        await js.worker.line(f"waiting {job_id}")
        running = (await http.get(f"{location}?wait=10&after=1")).json()
        assert running["status"] == "running"
        gone = await http.delete(location)
        assert gone.json()["status"] == "cancelled"
        # The notice reached the handler while its job was running: its signal aborted.
        assert await js.worker.line(f"aborted {job_id}") == f"aborted {job_id} cancelled"
        await js.worker.line("log info", containing=f"job {job_id} ")
        events = (await http.get(f"{location}/events")).json()["events"]
    assert [e["type"] for e in events] == ["queued", "started", "cancelled"]


async def test_a_running_job_is_aborted_at_its_deadline(js: Served) -> None:
    async with js.gw.client() as http:
        r = await http.post(
            f"/v1/ops/{js.op('wait')}", json={}, headers={"X-Deadline-Seconds": "1"}
        )
        job_id = r.json()["id"]
        assert await js.worker.line(f"aborted {job_id}") == f"aborted {job_id} expired"
        job = (await http.get(f"{r.headers['location']}?wait=10")).json()
    assert job["status"] == "expired"


async def test_heartbeats_keep_a_job_past_its_lease(js: Served) -> None:
    seconds = 2 * LEASE_SECONDS + 1  # only heartbeats keep its lease that long
    started = time.monotonic()
    async with js.gw.client() as http:
        r = await http.post(f"/v1/ops/{js.op('slow')}?wait=60", json={"seconds": seconds})
        job = r.json()
        events = (await http.get(f"{r.headers['location']}/events")).json()["events"]
    assert job["status"] == "succeeded", job  # not failed with worker_lost
    assert time.monotonic() - started >= seconds
    assert job["result"] == {"slept": seconds}
    assert [e["type"] for e in events] == ["queued", "started", "result"]


async def test_a_request_past_its_deadline_is_skipped_unrun(js: Served) -> None:
    """Published straight to the queue (RabbitMQ would drop an expired request the gateway
    sent): the expired one is acked unrun and unanswered, the fresh one answered."""
    op = js.op("echo")
    connection = await aio_pika.connect(js.rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        now_ms = int(time.time() * 1000)
        for job_id, deadline in (("js-expired", now_ms - 1000), ("js-fresh", now_ms + 60_000)):
            body = orjson.dumps({"id": job_id})
            await publish(
                channel, op, body, job_id=job_id, reply_to=replies.name,
                headers={"x-deadline": deadline},
            )  # fmt: skip
        [answer] = await take(replies, 1)
        await js.worker.line("ran js-fresh")
        # Requests are handled in order, so a run of the expired one would be seen first.
        assert not any(line.startswith("ran js-expired") for line in js.worker.lines)
        assert answer.correlation_id == "js-fresh"
        assert orjson.loads(answer.body) == {"id": "js-fresh"}
        assert await replies.get(fail=False) is None  # nothing for the expired one
    # Both acked: with the worker gone, nothing comes back to the queue.
    assert await js.worker.stop() == 0
    assert await queue_left(js.rabbit, op) == 0


async def test_a_request_of_a_cancelled_job_is_skipped_unrun(js: Served) -> None:
    """A cancel notice that came before the request: the kit remembers it."""
    op = js.op("echo")
    connection = await aio_pika.connect(js.rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        notices = await channel.get_exchange("gateway.cancel")
        await notices.publish(
            aio_pika.Message(
                orjson.dumps({"job_id": "js-cancelled", "op": op}),
                correlation_id="js-cancelled",
                type="cancel",
            ),
            routing_key="",
        )
        await js.worker.line("log debug job js-cancelled cancelled by the gateway")
        for job_id in ("js-cancelled", "js-wanted"):
            await publish(channel, op, b"{}", job_id=job_id, reply_to=replies.name)
        [answer] = await take(replies, 1)
        assert answer.correlation_id == "js-wanted"
        await js.worker.line(f"log debug job js-cancelled ({op}) skipped: cancelled already")
        assert not any(line.startswith("ran js-cancelled") for line in js.worker.lines)
    assert await js.worker.stop() == 0
    assert await queue_left(js.rabbit, op) == 0  # acked, unrun


async def test_a_quick_job_is_acked_only_after_its_answer(js: Served) -> None:
    """A worker killed mid-job had not acked: RabbitMQ redelivers the request to the next
    worker, which answers; and that one acks once answered."""
    async with js.gw.client() as http:
        r = await http.post(f"/v1/ops/{js.op('echo')}", json={"hold_until_redelivered": True})
        job_id = r.json()["id"]
        await js.worker.line(f"holding {job_id}")
        await js.worker.stop(signal.SIGKILL)
        second = await js.start_worker()
        ran = await second.line(f"ran {job_id}")
        job = (await http.get(f"{r.headers['location']}?wait=30")).json()
    assert "attempt=1 redelivered=true" in ran
    assert job["status"] == "succeeded", job
    assert job["result"] == {"hold_until_redelivered": True}
    assert await second.stop() == 0
    assert await queue_left(js.rabbit, js.op("echo")) == 0


async def test_a_lost_connection_is_restored_and_a_long_job_outlives_it(js: Served) -> None:
    """The broker connection cut mid-job (a network failure): the worker reconnects, and
    the long job, whose request was acked, goes on and answers on the new connection."""
    assert await js.worker.stop() == 0
    async with TcpProxy(js.rabbit.port) as proxy, js.gw.client() as http:
        worker = await js.start_worker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        seconds = LEASE_SECONDS  # spans the cut and the reconnection
        r = await http.post(f"/v1/ops/{js.op('slow')}", json={"seconds": seconds})
        await http.get(f"{r.headers['location']}?wait=10&after=1")  # running
        proxy.cut()
        await worker.line("log warn connection to RabbitMQ lost")
        await worker.line("log info serving", nth=2)  # consuming again
        job = (await http.get(f"{r.headers['location']}?wait=30")).json()
        assert job["status"] == "succeeded", job  # not worker_lost
        assert job["result"] == {"slept": seconds}
        # And new jobs are served on the new connection.
        echo = await http.post(f"/v1/ops/{js.op('echo')}?wait=30", json={"after": "cut"})
        assert echo.json()["result"] == {"after": "cut"}
    assert proxy.connections == 2


async def test_job_failed_and_a_bug_become_error_answers(js: Served) -> None:
    failure = {"code": "refused", "message": "not today", "details": [{"why": "test"}]}
    async with js.gw.client() as http:
        refused = (
            await http.post(f"/v1/ops/{js.op('echo')}?wait=30", json={"fail": failure})
        ).json()
        buggy = (await http.post(f"/v1/ops/{js.op('echo')}?wait=30", json={"bug": True})).json()
    assert refused["status"] == "failed"
    assert refused["error"] == failure
    assert buggy["status"] == "failed"
    assert buggy["error"]["code"] == "worker_error"
    assert buggy["error"]["message"].startswith("TypeError: ")
    # The bug is logged, once, with where it was thrown; a JobFailed is no bug.
    logged = await js.worker.line("log error", containing=f"job {buggy['id']} ")
    assert "TypeError" in logged and "worker.mjs" in logged
    assert not any(ln.startswith("log error") and refused["id"] in ln for ln in js.worker.lines)


async def test_progress_events_reach_the_client(js: Served) -> None:
    async with js.gw.client() as http:
        r = await http.post(f"/v1/ops/{js.op('echo')}?wait=30", json={"steps": 3})
        job = r.json()
        events = (await http.get(f"{r.headers['location']}/events")).json()["events"]
    assert job["status"] == "succeeded", job
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress == [{"done": n, "total": 3} for n in (1, 2, 3)]
    assert events[-1]["type"] == "result"


async def test_a_request_that_is_not_json_is_answered_invalid_request(js: Served) -> None:
    connection = await aio_pika.connect(js.rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await publish(
            channel, js.op("echo"), b"{not json", job_id="js-garbled", reply_to=replies.name
        )
        [answer] = await take(replies, 1)
    assert answer.correlation_id == "js-garbled"
    assert answer.type == "error"
    assert answer.user_id == GATEWAY_USER  # our broker user, on every answer
    assert answer.content_type == "application/json"
    assert orjson.loads(answer.body) == {
        "error": {"code": "invalid_request", "message": "the request is not JSON"}
    }
    assert not any(line.startswith("ran js-garbled") for line in js.worker.lines)


async def test_an_off_contract_result_fails_invalid_result_from_the_worker(js: Served) -> None:
    op = js.op("strict")
    async with js.gw.client() as http:
        good = (await http.post(f"/v1/ops/{op}?wait=30", json={"result": {"n": 1}})).json()
        bad = (await http.post(f"/v1/ops/{op}?wait=30", json={"result": {"n": "one"}})).json()
        bad_progress = (
            await http.post(
                f"/v1/ops/{op}?wait=30", json={"progress": {"done": "x"}, "result": {"n": 1}}
            )
        ).json()
    assert good["status"] == "succeeded", good
    assert bad["status"] == "failed"
    assert bad["error"]["code"] == "invalid_result"
    # Said by the kit (the gateway would say "the worker's result ..."), with the details.
    assert bad["error"]["message"].startswith(
        f"the handler's result does not match the contract of {op}"
    )
    assert [d["path"] for d in bad["error"]["details"]] == ["/n"]
    logged = await js.worker.line("log warn", containing=f"job {bad['id']} ")
    assert "invalid_result" in logged
    # Off-contract progress is not sent either: progress() throws invalid_progress.
    assert bad_progress["status"] == "failed"
    assert bad_progress["error"]["code"] == "invalid_progress"
    assert [d["path"] for d in bad_progress["error"]["details"]] == ["/done"]


async def test_sigterm_lets_a_running_quick_job_finish_then_exits_0(js: Served) -> None:
    async with js.gw.client() as http:
        r = await http.post(f"/v1/ops/{js.op('echo')}", json={"hold_ms": 1500})
        job_id = r.json()["id"]
        await js.worker.line(f"ran {job_id}")
        js.worker.process.send_signal(signal.SIGTERM)
        await js.worker.line("log info", containing="shutting down")
        job = (await http.get(f"{r.headers['location']}?wait=30")).json()
    assert job["status"] == "succeeded", job
    assert await js.worker.exited() == 0, js.worker.lines
    assert js.worker.lines[-2:] == ["log info stopped", "exited"]
    assert await queue_left(js.rabbit, js.op("echo")) == 0, js.worker.lines  # acked, not left


async def test_requests_not_from_the_gateways_user_are_rejected_unrun(js: Served) -> None:
    connection = await aio_pika.connect(js.rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await publish(
            channel, js.op("echo"), b"{}", job_id="js-forged", reply_to=replies.name,
            user_id=None,
        )  # fmt: skip
        await js.worker.line("log warn request js-forged")
        assert await replies.get(fail=False) is None
    assert not any(line.startswith("ran js-forged") for line in js.worker.lines)
    assert await js.worker.stop() == 0
    assert await queue_left(js.rabbit, js.op("echo")) == 0  # rejected (dead-lettered)


async def test_trace_context_is_carried_on_every_answer(js: Served) -> None:
    """The gateway's part (HTTP `traceparent` into the request's headers) aside: requests
    published with a traceparent get it back on every answer, with the worker's own span."""
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    traced: dict[str, object] = {"traceparent": traceparent, "tracestate": TRACESTATE}
    connection = await aio_pika.connect(js.rabbit.url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        Request = tuple[str, str, dict[str, object], dict[str, object]]
        requests: list[Request] = [  # job id, op, body, headers: every answer type among them
            ("js-t-progress", js.op("echo"), {"steps": 1}, traced),
            ("js-t-long", js.op("slow"), {"seconds": 0.6}, {**traced, "x-lease-seconds": 1}),
            ("js-t-bug", js.op("echo"), {"bug": True}, traced),
            ("js-t-upper", js.op("echo"), {}, {"traceparent": traceparent.upper()}),
        ]
        for job_id, op, body, headers in requests:
            await publish(
                channel, op, orjson.dumps(body), job_id=job_id, reply_to=replies.name,
                headers=headers,
            )  # fmt: skip
        answers: dict[str, list[AbstractIncomingMessage]] = {}
        async with replies.iterator() as messages, asyncio.timeout(30):
            async for message in messages:
                await message.ack()
                answers.setdefault(message.correlation_id or "", []).append(message)
                finals = [m for ms in answers.values() for m in ms if m.type in ("result", "error")]
                if len(finals) == len(requests):
                    break

    kinds = {job_id: [m.type for m in ms] for job_id, ms in answers.items()}
    assert kinds["js-t-progress"] == ["progress", "result"]
    assert kinds["js-t-long"][0] == "started" and kinds["js-t-long"][-1] == "result"
    assert "heartbeat" in kinds["js-t-long"]
    assert kinds["js-t-bug"] == ["error"]
    for job_id in ("js-t-progress", "js-t-long", "js-t-bug"):
        spans = set()
        for message in answers[job_id]:
            answered = message.headers or {}
            match = re.fullmatch(
                r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", str(answered["traceparent"])
            )
            assert match, answered
            trace_id, span_id, flags = match.groups()
            assert (trace_id, flags) == (TRACE_ID, "01")
            assert span_id not in (PARENT_ID, "0" * 16)
            assert answered["tracestate"] == TRACESTATE
            spans.add(span_id)
        assert len(spans) == 1, spans  # one span: the worker's work on that job
    # An invalid traceparent (upper-case hex) is not continued: no trace headers at all.
    assert [m.headers or {} for m in answers["js-t-upper"]] == [{}]
    assert (await js.worker.line("ran js-t-upper")).endswith("trace=none")
    assert (await js.worker.line("ran js-t-progress")).endswith(f"trace={TRACE_ID}")
    # The kit's log lines about a traced job name its trace.
    logged = await js.worker.line("log error", containing="job js-t-bug ")
    assert f"trace_id={TRACE_ID}" in logged


async def test_a_client_trace_reaches_the_js_worker_unchanged(js: Served) -> None:
    """Through the gateway: the HTTP client's traceparent is the request message's header,
    and the job resource names its trace."""
    sent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    async with js.gw.client() as http:
        r = await http.post(
            f"/v1/ops/{js.op('echo')}?wait=30", json={"x": 1}, headers={"traceparent": sent}
        )
    job = r.json()
    assert job["status"] == "succeeded" and job["trace_id"] == TRACE_ID
    line = await js.worker.line(f"ran {job['id']}")
    assert line.endswith(f"traceparent={sent} trace={TRACE_ID}"), line


async def test_traceparent_parsing_is_strict() -> None:
    """parseTraceparent / formatTraceparent / newSpanId of the kit, in a real node."""
    script = f"""
      import {{ parseTraceparent, formatTraceparent, newSpanId }} from {str(KIT)!r};
      const cases = {{
        valid: '00-{TRACE_ID}-{PARENT_ID}-01',
        bytes: Buffer.from('00-{TRACE_ID}-{PARENT_ID}-00'),
        version: 'ff-{TRACE_ID}-{PARENT_ID}-01',
        future: '01-{TRACE_ID}-{PARENT_ID}-01',
        upper: '00-{TRACE_ID.upper()}-{PARENT_ID}-01',
        zeroTrace: '00-{"0" * 32}-{PARENT_ID}-01',
        zeroParent: '00-{TRACE_ID}-{"0" * 16}-01',
        short: '00-{TRACE_ID[:-1]}-{PARENT_ID}-01',
        longer: '00-{TRACE_ID}-{PARENT_ID}-01-00',
        number: 5,
      }};
      const parsed = Object.fromEntries(
        Object.entries(cases).map(([name, value]) => [name, parseTraceparent(value)]),
      );
      const spans = Array.from({{ length: 200 }}, newSpanId);
      console.log(JSON.stringify({{
        parsed,
        formatted: formatTraceparent(
          {{ traceId: '{TRACE_ID}', spanId: '{PARENT_ID}', flags: '01' }},
        ),
        spansOk: spans.every((s) => /^[0-9a-f]{{16}}$/.test(s) && !/^0+$/.test(s)),
        distinct: new Set(spans).size,
      }}));
    """
    process = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", script, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    assert process.returncode == 0
    verdict = orjson.loads(output)
    parsed = verdict["parsed"]
    assert parsed["valid"] == {"traceId": TRACE_ID, "parentId": PARENT_ID, "flags": "01"}
    assert parsed["bytes"] == {"traceId": TRACE_ID, "parentId": PARENT_ID, "flags": "00"}
    invalid = {"version", "future", "upper", "zeroTrace", "zeroParent", "short", "longer", "number"}
    assert {name for name, value in parsed.items() if value is None} == invalid
    assert verdict["formatted"] == f"00-{TRACE_ID}-{PARENT_ID}-01"
    assert verdict["spansOk"] is True
    assert verdict["distinct"] == 200
