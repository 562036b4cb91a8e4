"""Trust boundaries on the broker (issue 11, point 7): what a worker's broker user can and
cannot do to jobs, under the least-privilege users of deploy/rabbitmq/setup.sh and a
gateway run with `worker_users`. SECURITY.md ("What each party can and cannot do") names
these tests.

The users and vhost are made once for the module by the real setup script against the
test node (twice: it must be safe to re-run); every test gets a gateway of its own with a
fresh store, on that vhost, logged in as `gateway`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelPreconditionFailed
from aiormq.exceptions import ChannelAccessRefused

from gateway.app import create_app
from gateway.config import Settings
from gateway.trust import WorkerUsers, broker_user
from gateway.wire import ANSWERS_QUEUE, DEAD_LETTER_QUEUE
from gateway.worker import Worker
from tests.fault_support import poll_until
from tests.support import (
    BROKER_SCRIPT,
    EXAMPLE_CONTRACTS,
    RabbitNode,
    RunningGateway,
    add_contract,
    serve_gateway,
)

SETUP_SCRIPT = BROKER_SCRIPT.parent / "rabbitmq" / "setup.sh"
PLAIN: dict[str, object] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {"request": {"type": "object"}, "result": {"type": "object"}},
}


@dataclass(frozen=True)
class BrokerUsers:
    """What setup.sh made: a vhost, the gateway's user, and one worker user per operation
    (wx answers x and add, wy answers y)."""

    node: RabbitNode
    vhost: str
    prefix: str
    passwords: dict[str, str]
    worker_users_line: str
    runs: tuple[str, str]  # the script's output, first and second run

    def url(self, user: str) -> str:
        return f"amqp://{user}:{self.passwords[user]}@127.0.0.1:{self.node.port}/{self.vhost}"

    def op(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def wx(self) -> str:
        return f"wx-{self.prefix}"

    @property
    def wy(self) -> str:
        return f"wy-{self.prefix}"


@pytest.fixture(scope="module")
def users(rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUsers]:
    tag = secrets.token_hex(4)
    prefix, vhost = f"t{tag}", f"trust-{tag}"
    wx, wy = f"wx-{prefix}", f"wy-{prefix}"
    # setup.sh runs one command as rabbitmqctl: this one reaches the test node (its
    # RABBITMQ_LOCAL_* settings come through the environment).
    ctl = tmp_path_factory.mktemp("ctl") / "rabbitmqctl"
    ctl.write_text(f'#!/bin/sh\nexec "{BROKER_SCRIPT}" ctl "$@"\n')
    ctl.chmod(0o755)
    env = {
        **rabbit.env,
        "RABBITMQCTL": str(ctl),
        "GATEWAY_VHOST": vhost,
        "GATEWAY_AMQP_PASSWORD": "gateway-" + secrets.token_hex(8),
        f"AMQP_PASSWORD_{wx.upper().replace('-', '_')}": "wx-" + secrets.token_hex(8),
        # wy is given no password: the script makes one up and prints it, once.
    }
    specs = [f"{wx}:{prefix}.x,{prefix}.add", f"{wy}:{prefix}.y"]

    def run() -> str:
        done = subprocess.run(
            [str(SETUP_SCRIPT), *specs], env=env, check=True, capture_output=True, text=True
        )
        return done.stdout

    first, second = run(), run()
    generated = re.search(rf"^password for {re.escape(wy)}: (\S+)$", first, re.M)
    assert generated, first
    line = re.search(r'^GATEWAY_WORKER_USERS="([^"]*)"$', first, re.M)
    assert line, first
    yield BrokerUsers(
        rabbit,
        vhost,
        prefix,
        {
            "gateway": env["GATEWAY_AMQP_PASSWORD"],
            wx: env[f"AMQP_PASSWORD_{wx.upper().replace('-', '_')}"],
            wy: generated.group(1),
        },
        line.group(1),
        (first, second),
    )
    rabbit.ctl("-q", "delete_vhost", vhost)
    for user in (wx, wy):
        rabbit.ctl("-q", "delete_user", user)


@pytest.fixture
async def gw(users: BrokerUsers, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway on the setup.sh vhost as `gateway`, trusting the printed worker users."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    add_contract(folder, users.op("x"), PLAIN)
    add_contract(folder, users.op("y"), PLAIN)
    add_contract(
        folder, users.op("add"), orjson.loads((EXAMPLE_CONTRACTS / "math.add.json").read_bytes())
    )
    settings = Settings(
        broker_url=users.url("gateway"),
        contracts_dir=folder,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        worker_users=WorkerUsers.parse(users.worker_users_line),
    )
    ops = {name: users.op(name) for name in ("x", "y", "add")}
    async with serve_gateway(settings, ops) as running:
        # Requests left in the queues by earlier tests of the module would be taken first.
        async with await aio_pika.connect(settings.broker_url) as connection:
            channel = await connection.channel()
            for op in ops.values():
                await (await channel.get_queue(op)).purge()
        yield running


def count(gw: RunningGateway, outcome: str) -> float:
    value = gw.service.metrics.registry.get_sample_value(
        "gateway_answers_total", {"outcome": outcome}
    )
    return value or 0.0


async def publish(url: str, routing_key: str, body: bytes = b"{}", **properties: object) -> None:
    """Publish as the URL's user, with publisher confirms (so a refusal raises here)."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body, content_type="application/json", **properties),  # type: ignore[arg-type]
            routing_key=routing_key,
        )


async def submit(gw: RunningGateway, name: str, body: object) -> str:
    async with gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op(name)}", json=body)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


async def job(gw: RunningGateway, job_id: str) -> dict[str, object]:
    async with gw.client() as http:
        r = await http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    found: dict[str, object] = r.json()
    return found


async def wait_for(gw: RunningGateway, job_id: str) -> dict[str, object]:
    async with gw.client() as http:
        r = await http.get(f"/v1/jobs/{job_id}?wait=15")
    found: dict[str, object] = r.json()
    return found


# -- the setup script --------------------------------------------------------------------


def test_setup_script_is_safe_to_rerun_and_prints_worker_users(users: BrokerUsers) -> None:
    second = users.runs[1]
    assert "password for" not in second  # an existing user keeps its password
    x, y, add = users.op("x"), users.op("y"), users.op("add")
    assert users.worker_users_line == f"{x}={users.wx} {add}={users.wx} {y}={users.wy}"
    assert f'GATEWAY_WORKER_USERS="{users.worker_users_line}"' in second
    permissions = users.node.ctl_output("-q", "list_permissions", "-p", users.vhost)
    wx_line = next(line for line in permissions.splitlines() if line.startswith(users.wx))
    assert wx_line.split("\t")[1:] == [
        r"^amq\.gen-.*$",
        r"^(amq\.default|amq\.gen-.*)$",
        rf"^({re.escape(x)}|{re.escape(add)}|gateway\.cancel|amq\.gen-.*)$",
    ]


async def test_a_worker_user_cannot_take_another_operations_requests(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    async with await aio_pika.connect(users.url(users.wx)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(users.op("y"), passive=True)  # no permission needed

        async def take(message: AbstractIncomingMessage) -> None:
            await message.ack()

        with pytest.raises(ChannelAccessRefused):
            await queue.consume(take)


async def test_a_worker_cannot_claim_another_broker_user(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    with pytest.raises(ChannelPreconditionFailed):
        await publish(users.url(users.wx), ANSWERS_QUEUE, correlation_id="any", user_id=users.wy)


# -- answers -----------------------------------------------------------------------------


async def test_forged_result_from_another_operations_worker_is_dropped(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    y1 = await submit(gw, "y", {"n": 1})
    # wx (a worker of x) answers a job of y: as itself, and without any user_id.
    await publish(
        users.url(users.wx), ANSWERS_QUEUE, b'{"forged": 1}', correlation_id=y1, user_id=users.wx
    )
    await publish(users.url(users.wx), ANSWERS_QUEUE, b'{"forged": 2}', correlation_id=y1)
    await poll_until(lambda: count(gw, "forged") == 2)
    assert (await job(gw, y1))["status"] == "queued"
    # y's own worker is heard.
    await publish(
        users.url(users.wy), ANSWERS_QUEUE, b'{"ok": true}', correlation_id=y1, user_id=users.wy
    )
    done = await wait_for(gw, y1)
    assert (done["status"], done["result"]) == ("succeeded", {"ok": True})


async def test_forged_dead_letter_is_dropped_and_a_real_rejection_still_fails_the_job(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    y1 = await submit(gw, "y", {"n": 1})
    # Straight into the dead-letter queue, through the default exchange.
    await publish(
        users.url(users.wx),
        DEAD_LETTER_QUEUE,
        correlation_id=y1,
        headers={"x-first-death-reason": "rejected"},
    )
    await poll_until(lambda: count(gw, "forged") == 1)
    assert (await job(gw, y1))["status"] == "queued"
    # y's worker rejects the real request: RabbitMQ dead-letters it, the gateway's own.
    rejected = asyncio.get_running_loop().create_future()

    async def reject(message: AbstractIncomingMessage) -> None:
        await message.reject(requeue=False)
        rejected.set_result(message.user_id)

    async with await aio_pika.connect(users.url(users.wy)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(users.op("y"), passive=True)
        await queue.consume(reject)
        assert await asyncio.wait_for(rejected, 15) == "gateway"  # the gateway stamps it
        done = await wait_for(gw, y1)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "rejected"  # type: ignore[index]


async def test_heartbeat_from_another_operations_worker_does_not_extend_the_lease(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    y1 = await submit(gw, "y", {"n": 1})
    await publish(
        users.url(users.wy), ANSWERS_QUEUE, b"null", correlation_id=y1, type="started",
        user_id=users.wy,
    )  # fmt: skip
    async with gw.client() as http:
        running = (await http.get(f"/v1/jobs/{y1}?wait=15&after=1")).json()
    assert running["status"] == "running"
    lease = gw.service.contracts[users.op("y")].settings.lease_seconds
    before = time.time()  # the genuine lease, from `started`, ends before before + lease
    await publish(
        users.url(users.wx), ANSWERS_QUEUE, b"null", correlation_id=y1, type="heartbeat",
        user_id=users.wx,
    )  # fmt: skip
    await poll_until(lambda: count(gw, "forged") == 1)
    assert count(gw, "heartbeat") == 0
    overdue = await gw.service.store.overdue(before + lease + 0.001)
    assert (y1, "lease") in overdue  # not extended: the worker counts as lost then
    # Whereas y's own worker's heartbeat does extend it.
    await publish(
        users.url(users.wy), ANSWERS_QUEUE, b"null", correlation_id=y1, type="heartbeat",
        user_id=users.wy,
    )  # fmt: skip
    await poll_until(lambda: count(gw, "heartbeat") == 1)
    assert (y1, "lease") not in await gw.service.store.overdue(before + lease + 0.001)


async def test_swapped_correlation_ids_across_operations_are_dropped(
    gw: RunningGateway, users: BrokerUsers
) -> None:
    x1 = await submit(gw, "x", {"for": "x"})
    y1 = await submit(gw, "y", {"for": "y"})
    # A bug swaps the ids: x's worker answers y's job, y's worker answers x's.
    await publish(
        users.url(users.wx), ANSWERS_QUEUE, b'{"from": "x"}', correlation_id=y1, user_id=users.wx
    )
    await publish(
        users.url(users.wy), ANSWERS_QUEUE, b'{"from": "y"}', correlation_id=x1, user_id=users.wy
    )
    await poll_until(lambda: count(gw, "forged") == 2)
    assert (await job(gw, x1))["status"] == "queued"
    assert (await job(gw, y1))["status"] == "queued"
    await publish(
        users.url(users.wx), ANSWERS_QUEUE, b'{"from": "x"}', correlation_id=x1, user_id=users.wx
    )
    assert (await wait_for(gw, x1))["result"] == {"from": "x"}


# -- the Python worker kit -----------------------------------------------------------------


async def test_python_worker_kit_round_trips_as_a_least_privilege_user(
    gw: RunningGateway, users: BrokerUsers, run_worker: Callable[[Worker], object]
) -> None:
    seen: list[object] = []
    worker = Worker(users.url(users.wx), gateway_user="gateway")

    @worker.operation(users.op("add"))
    async def add(request: dict[str, int], job: object) -> dict[str, int]:
        seen.append(request)
        return {"sum": request["a"] + request["b"]}

    # Published straight into the operation's queue by another worker's user: no HTTP
    # auth, no contract. The kit rejects it unrun; the gateway drops its dead letter.
    await publish(
        users.url(users.wy),
        users.op("add"),
        b'{"a": 1000, "b": 1}',
        correlation_id="forged-request",
        reply_to=ANSWERS_QUEUE,
        user_id=users.wy,
    )
    await run_worker(worker)  # type: ignore[misc]
    async with gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('add')}?wait=15", json={"a": 2, "b": 3})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"sum": 5}
    await poll_until(lambda: count(gw, "forged") == 1)
    assert seen == [{"a": 2, "b": 3}]


# -- settings ------------------------------------------------------------------------------


def test_worker_users_parse_and_match_first_glob() -> None:
    users = WorkerUsers.parse("math.add=worker-math  report.*=worker-reports,worker-batch *=w")
    assert users.users_for("math.add") == ("worker-math",)
    assert users.users_for("report.generate") == ("worker-reports", "worker-batch")
    assert users.users_for("math.mul") == ("w",)
    assert users.allows("report.x", "worker-batch") and not users.allows("math.add", "w")
    assert not users.allows("math.add", None)
    assert str(users) == "math.add=worker-math report.*=worker-reports,worker-batch *=w"
    for bad in ("", "math.add", "=u", "math.add=", "math.add=,"):
        with pytest.raises(ValueError):
            WorkerUsers.parse(bad)


def test_broker_user_comes_from_the_url() -> None:
    assert broker_user("amqp://gate%40way:pw@host/vh") == "gate@way"
    assert broker_user("amqp://host:5672/") == "guest"
    assert broker_user("amqp://a:p@h1/v, amqp://a:p@h2/v") == "a"


def test_start_up_is_refused_when_an_operation_has_no_worker_users(tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    add_contract(folder, "trust.covered", PLAIN)
    add_contract(folder, "trust.orphan", PLAIN)
    settings = Settings(
        contracts_dir=folder,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        worker_users=WorkerUsers.parse("trust.covered=w"),
    )
    with pytest.raises(ValueError, match=r"trust\.orphan"):
        create_app(settings)
