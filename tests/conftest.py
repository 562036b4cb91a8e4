from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.worker import Worker
from tests.polyglot import Polyglot, polyglot_gateway
from tests.postgres_support import PostgresServer
from tests.support import RabbitNode, RunningGateway, make_settings, serve_gateway


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def gateway(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as gw:
        yield gw


@pytest.fixture
async def run_worker(rabbit: RabbitNode) -> AsyncIterator[object]:
    """Start a `gateway.worker.Worker` in this process; stopped at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(worker: Worker) -> Worker:
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(worker.serve(ready)))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait([waiter, tasks[-1]], return_when=asyncio.FIRST_COMPLETED)
        if tasks[-1] in done:
            tasks[-1].result()
        return worker

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(scope="session")
async def polyglot(
    rabbit: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Polyglot]:
    """One gateway with the example contracts and workers, for the client suites."""
    async with polyglot_gateway(rabbit, tmp_path_factory.mktemp("polyglot")) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server, which tests may restart, pause and kill."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """The URL (with a password) of a database on the private PostgreSQL server."""
    return postgres.url
