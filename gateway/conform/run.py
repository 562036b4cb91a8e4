"""One conform run, start to end: the broker, the gateway's part, the tap, the worker,
the scenarios, the verdicts; and everything started, stopped again.

It exists to hold the order of things in one readable function (`conform`), and the
clean-up that must happen whatever fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

from gateway.conform import SetupError
from gateway.conform.cases import Verdict, judge
from gateway.conform.gateway_double import GatewayDouble
from gateway.conform.plan import Plan
from gateway.conform.process import WorkerProcess
from gateway.conform.records import Record, Roles
from gateway.conform.scenarios import prepare, run_scenarios
from gateway.conform.tap import Tap
from gateway.conform.where import broker_for_run

__all__ = ["Outcome", "conform"]

READY_POLL_SECONDS = 0.1  # RabbitMQ tells nobody of a new consumer: ask the queue


@dataclass(frozen=True, slots=True)
class Outcome:
    verdicts: list[Verdict]
    worker_output: list[str]
    preamble: list[str]


def relayed_url(url: str, port: int) -> str:
    """The broker URL the worker gets: the same credentials, virtual host and options,
    at the tap's loopback port (plain AMQP: the tap speaks TLS to RabbitMQ if need be)."""
    parsed = URL(url, encoded=True)
    return str(parsed.with_scheme("amqp").with_host("127.0.0.1").with_port(port))


def _upstream(url: str) -> tuple[tuple[str, int], bool]:
    parsed = URL(url, encoded=True)
    tls = parsed.scheme == "amqps"
    return (parsed.host or "127.0.0.1", parsed.port or (5671 if tls else 5672)), tls


async def conform(plan: Plan, command: Sequence[str], broker_url: str | None) -> Outcome:
    """Run the claimed cases against the worker `command`; `SetupError` if they cannot run."""
    async with broker_for_run(broker_url) as broker:
        record, roles = Record(), Roles()
        double = GatewayDouble(plan, broker.url, record)
        upstream, tls = _upstream(broker.url)
        tap = Tap(
            upstream,
            tls=tls,
            queue=plan.op,
            reply_queue=double.reply_queue,
            on_event=record.tap_event,
        )
        worker: WorkerProcess | None = None
        try:
            await double.open()
            await tap.start()
            await prepare(plan, double, roles)
            worker = WorkerProcess(command, relayed_url(broker.url, tap.port), record.worker_exited)
            await worker.start()
            await _wait_serving(plan, double, worker, record)
            await run_scenarios(plan, double, record, roles)
            record.queue_left, _ = await double.queue_counts()
            verdicts = judge(plan, record, roles, tap.blind)
        finally:
            if worker is not None:
                await worker.stop()
            await tap.close()
            if not broker.fresh and double.found_idle:
                await _purge(double)  # only conform's requests can be left in it
            await double.close()
        preamble = [
            f"gateway conform {plan.op} ({plan.claims} claims), on {broker.description}",
            f"worker: {shlex.join(command)}",
            "",
        ]
        return Outcome(verdicts, list(worker.lines), preamble)


async def _wait_serving(
    plan: Plan, double: GatewayDouble, worker: WorkerProcess, record: Record
) -> None:
    """Until the worker consumes the operation's queue, at most `--start-timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.start_timeout
    while True:
        _, consumers = await double.queue_counts()
        if consumers:
            return
        if record.worker_exit is not None:
            raise SetupError(
                f"the worker exited (status {record.worker_exit}) before consuming "
                f"{plan.op}: {worker.last_line()}"
            )
        if loop.time() > deadline:
            raise SetupError(
                f"the worker did not consume {plan.op} within {plan.start_timeout:g} s "
                f"(--start-timeout; does it connect to $GATEWAY_BROKER_URL?): "
                f"{worker.last_line()}"
            )
        await record.until(lambda: record.worker_exit is not None, READY_POLL_SECONDS)


async def _purge(double: GatewayDouble) -> None:
    with contextlib.suppress(Exception):
        await double.purge()
