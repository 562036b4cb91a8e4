"""A validation bomb (issue 11, point 1): a body just under the size limit made of 240k
wrong items in a typed array. Checking it used to collect every one of its 240k errors on
the event loop: seconds of a stalled process and hundreds of MB. Now a check looks at a
bounded number of errors, and a large body is checked off the event loop; these tests
prove both, in-process and against a real `gateway serve` process under attack, for
requests and for workers' answers."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
from jsonschema.exceptions import ValidationError

from gateway import contracts as contracts_module
from gateway.contracts import (
    INLINE_CHECK_BYTES,
    MAX_DETAILS,
    MAX_ERRORS_EXAMINED,
    Contract,
    ContractRegistry,
    detail_order,
    validation_details,
)
from gateway.errors import InvalidRequest
from gateway.types import JSON, JSONObject
from tests.fault_support import (
    GatewayProcess,
    ReadyzProbe,
    assert_error_body,
    follow_to_end,
    poll_until,
    rss_kib,
)
from tests.support import RabbitNode, add_contract, free_port, make_settings

BOMB_ITEMS = 240_000
NUMBERS: JSONObject = {
    "type": "object",
    "required": ["numbers"],
    "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
}
CONTRACT: JSONObject = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {"request": NUMBERS, "result": NUMBERS, "progress": NUMBERS},
}
BOMB: JSON = {"numbers": ["x"] * BOMB_ITEMS}
BOMB_BYTES = orjson.dumps(BOMB)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    folder = tmp_path_factory.mktemp("bomb-contracts")
    add_contract(folder, "numbers.sum", CONTRACT)
    return ContractRegistry.from_directory(folder)["numbers.sum"]


def test_the_bomb_is_under_the_body_limit() -> None:
    assert 0.9 * MIB < len(BOMB_BYTES) < MIB  # so it reaches validation, not a 413


# -- in-process: bounded work ------------------------------------------------------------


def test_details_examine_a_bounded_number_of_errors(contract: Contract) -> None:
    examined = 0

    def counted() -> Iterator[ValidationError]:
        nonlocal examined
        for error in contract.request.iter_errors(BOMB):
            examined += 1
            yield error

    started = time.perf_counter()
    details = validation_details(counted())
    took = time.perf_counter() - started
    print(
        f"\n[bomb] details of {BOMB_ITEMS} wrong items: {took * 1000:.1f} ms, {examined} examined"
    )
    assert examined == MAX_ERRORS_EXAMINED  # taken lazily: the rest were never computed
    assert len(details) == MAX_DETAILS
    assert all(d["message"] == "'x' is not of type 'number'" for d in details)
    assert took < 0.5  # unbounded, it took 4.5 to 7 s


def test_every_contract_check_of_a_bomb_is_quick(contract: Contract) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as caught:
        contract.validate_request(BOMB)
    problems = [contract.result_errors(BOMB), contract.progress_errors(BOMB)]
    took = time.perf_counter() - started
    print(f"\n[bomb] request, result and progress checks of the bomb: {took * 1000:.1f} ms")
    assert len(caught.value.details) == MAX_DETAILS
    assert caught.value.details[0]["path"].startswith("/numbers/")
    assert all(len(p) == MAX_DETAILS for p in problems)
    assert took < 1.5


def unbounded_details(errors: list[ValidationError]) -> list[JSONObject]:
    """The details as computed without the bound (every error collected), by the rule
    every client applies (issue 12): `detail_order`."""
    ordered = sorted(
        errors, key=lambda e: detail_order([str(p) for p in e.absolute_path], str(e.validator))
    )
    return [
        {"path": "".join(f"/{p}" for p in e.absolute_path), "message": e.message}
        for e in ordered[:MAX_DETAILS]
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"numbers": "x"},
        {},
        {"numbers": [1, "two", 3, None]},
        {"numbers": ["x"] * (MAX_ERRORS_EXAMINED - 1)},
        [1, 2],
    ],
)
def test_a_body_with_few_errors_gets_the_same_details_as_before(
    contract: Contract, body: JSON
) -> None:
    # Clients in other languages compare these paths and their order: unchanged.
    before = unbounded_details(list(contract.request.iter_errors(body)))
    assert validation_details(contract.request.iter_errors(body)) == before


async def test_large_bodies_are_checked_off_the_event_loop(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    check = Contract.result_errors

    def spy(self: Contract, result: JSON) -> list[JSONObject]:
        threads.append(threading.current_thread().name)
        return check(self, result)

    monkeypatch.setattr(Contract, "result_errors", spy)
    small = await contract.check_result({"numbers": ["x"]}, 16)
    large = await contract.check_result(BOMB, len(BOMB_BYTES))
    assert small[0]["path"] == "/numbers/0" and len(large) == MAX_DETAILS
    # The small one inline (the hot path: no thread hop), the large one in the checker.
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("gateway-contract-check")
    assert contracts_module._checker._max_workers == 1
    assert len(BOMB_BYTES) > INLINE_CHECK_BYTES


# -- a real gateway process under attack -------------------------------------------------


@dataclass
class Served:
    process: GatewayProcess
    op: str
    broker_url: str

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


@pytest.fixture
async def served(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[Served]:
    """`gateway serve` as a process of its own, in a virtual host of its own, with the
    bomb's contract."""
    url = rabbit.add_vhost("bomb-" + secrets.token_hex(3))
    settings, ops = make_settings(tmp_path, url, {"numbers.sum": CONTRACT})
    process = GatewayProcess(
        free_port(), url, settings.contracts_dir, settings.store_url, tmp_path / "gateway.log"
    )
    await process.start()
    try:
        yield Served(process, ops["numbers.sum"], url)
    finally:
        await process.stop()


async def under_attack(served: Served, attack: object, name: str) -> tuple[float, float]:
    """Run the `attack` coroutine while probing `/readyz`; print and return the worst
    probe latency (s) and the growth of the gateway's peak RSS (MB)."""
    async with httpx.AsyncClient(base_url=served.process.url) as http:
        # Warm up (imports, connections, first job) so the baseline is the steady state.
        r = await http.post(f"/v1/ops/{served.op}", json={"numbers": [1, 2]})
        assert r.status_code == 202, r.text
        probe = ReadyzProbe(http)
        probing = asyncio.create_task(probe.run())
        await poll_until(lambda: len(probe.latencies) >= 20)  # a baseline
        baseline = max(probe.latencies)
        before = rss_kib(served.pid)
        started = time.monotonic()
        probe.latencies.clear()
        try:
            await attack  # type: ignore[misc]
        finally:
            probe.stop.set()
            await probing
        took = time.monotonic() - started
        after = rss_kib(served.pid)
    worst = max(probe.latencies)
    growth = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(
        f"\n[{name}] attack took {took:.2f}s; /readyz probes {len(probe.latencies)}, "
        f"worst {worst * 1000:.0f} ms (before the attack {baseline * 1000:.0f} ms); RSS "
        f"{before['VmRSS'] / 1024:.0f} MB before, {after['VmRSS'] / 1024:.0f} MB after, "
        f"peak {after['VmHWM'] / 1024:.0f} MB (+{growth:.0f} MB)",
        flush=True,
    )
    assert set(probe.statuses) == {200}, probe.statuses
    return worst, growth


async def test_four_request_bombs_at_once_leave_the_gateway_responsive(served: Served) -> None:
    responses: list[httpx.Response] = []

    async def attack() -> None:
        async with httpx.AsyncClient(base_url=served.process.url, timeout=120) as bombers:
            headers = {"content-type": "application/json"}
            sent = [
                bombers.post(f"/v1/ops/{served.op}", content=BOMB_BYTES, headers=headers)
                for _ in range(4)
            ]
            responses.extend(await asyncio.gather(*sent))

    worst, growth = await under_attack(served, attack(), "4 request bombs at once")
    for r in responses:
        assert_error_body(r, 422)
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert 0 < len(error["details"]) <= MAX_DETAILS
        assert error["details"][0]["path"].startswith("/numbers/")
    assert worst < 1.0  # unbounded, four bombs stalled /readyz for 16.6 s
    assert growth < 150  # unbounded, one bomb took RSS from 56 MB to ~580 MB


async def test_worker_answer_bombs_fail_their_jobs_and_leave_the_gateway_responsive(
    served: Served,
) -> None:
    """A plain worker (RabbitMQ's RPC pattern) answers each job with a result of 240k
    wrong items: each job fails with `invalid_result` and bounded details."""
    async with httpx.AsyncClient(base_url=served.process.url, timeout=60) as http:
        ids = []
        for n in range(4):
            r = await http.post(f"/v1/ops/{served.op}", json={"numbers": [n]})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])

    async def attack() -> None:
        connection = await aio_pika.connect(served.broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.get_queue(served.op, ensure=False)
            answered: set[str] = set()
            async with queue.iterator() as requests:
                async for request in requests:
                    async with request.process():
                        assert request.reply_to and request.correlation_id
                        await channel.default_exchange.publish(
                            aio_pika.Message(
                                BOMB_BYTES,
                                correlation_id=request.correlation_id,
                                content_type="application/json",
                            ),
                            routing_key=request.reply_to,
                        )
                        answered.add(request.correlation_id)
                    if set(ids) <= answered:
                        break
            async with httpx.AsyncClient(base_url=served.process.url, timeout=60) as http:
                jobs.extend(await asyncio.gather(*(follow_to_end(http, i) for i in ids)))

    jobs: list[dict[str, object]] = []
    worst, growth = await under_attack(served, attack(), "4 worker answer bombs")
    for job in jobs:
        assert job["status"] == "failed", job
        error = job["error"]
        assert isinstance(error, dict) and error["code"] == "invalid_result", error
        assert 0 < len(error["details"]) <= MAX_DETAILS
    assert worst < 1.0
    assert growth < 150
