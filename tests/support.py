"""Test harness: a private RabbitMQ node, gateways served by uvicorn on free ports, and
contract folders with per-test operation names so tests never share a queue."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aio_pika
import httpx
import orjson
import uvicorn

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import uvicorn_config
from gateway.service import GatewayService
from gateway.telemetry import Telemetry
from gateway.wire import STORE_MARKER_QUEUE

ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = ROOT / "deploy" / "rabbitmq-local.sh"
EXAMPLE_CONTRACTS = ROOT / "schemas" / "ops"
EXAMPLE_TOPICS = ROOT / "schemas" / "topics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RabbitNode:
    """A RabbitMQ node of the tests' own, started with deploy/rabbitmq-local.sh."""

    def __init__(
        self, directory: Path, *, name: str | None = None, epmd_port: int | None = None
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.name = name or f"gateway-test-{os.getpid()}"
        self.env = {
            **os.environ,
            "RABBITMQ_LOCAL_DIR": str(directory),
            "RABBITMQ_LOCAL_PORT": str(self.port),
            "RABBITMQ_LOCAL_DIST_PORT": str(free_port()),
            "RABBITMQ_LOCAL_EPMD_PORT": str(epmd_port or free_port()),
            "RABBITMQ_LOCAL_NODENAME": self.name,
            "RABBITMQ_LOCAL_ATTACHED": "1",  # dies with a test run killed as a whole
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str) -> None:
        """rabbitmqctl ARGS against this node."""
        subprocess.run([str(BROKER_SCRIPT), "ctl", *args], env=self.env, check=True)

    def _script(self, command: str) -> None:
        subprocess.run([str(BROKER_SCRIPT), command], env=self.env, check=True)

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def add_vhost(self, name: str) -> str:
        """A fresh virtual host for guest; its AMQP URL."""
        subprocess.run(
            [str(BROKER_SCRIPT), "ctl", "-q", "add_vhost", name], env=self.env, check=True
        )
        subprocess.run(
            [
                str(BROKER_SCRIPT),
                "ctl",
                "-q",
                "set_permissions",
                "-p",
                name,
                "guest",
                ".*",
                ".*",
                ".*",
            ],
            env=self.env,
            check=True,
        )
        return f"{self.url}{name}"

    def kill(self) -> None:
        """SIGKILL the node (no goodbye to clients)."""
        os.kill(self.pid, signal.SIGKILL)

    @property
    def pid(self) -> int:
        return int((self.directory / "rabbitmq.pid").read_text().strip())

    def kill_if_running(self, sig: int) -> None:
        """Send `sig` to the node if it runs (its pid file may outlive it: check the
        process is this node's Erlang VM before signalling it)."""
        try:
            pid = self.pid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.directory).encode() in cmdline:
            os.kill(pid, sig)

    def pause(self) -> None:
        """SIGSTOP the node: connections stay open, nothing is answered. Returns once every
        thread of its VM is stopped (a signal is delivered to each thread on its own), and
        only if the pid file names this node's VM: a test that goes on while the node still
        runs, or stops another process, would prove nothing."""
        pid = self.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert str(self.directory).encode() in cmdline, f"pid {pid} is not this node's VM"
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not all(_stopped(task) for task in Path(f"/proc/{pid}/task").iterdir()):
            # The kernel has no event for "stopped": poll /proc (microseconds, usually).
            assert time.monotonic() < deadline, f"node {pid} did not stop"
            time.sleep(0.001)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def ctl_output(self, *args: str) -> str:
        """What rabbitmqctl ARGS prints."""
        return subprocess.run(
            [str(BROKER_SCRIPT), "ctl", *args], env=self.env, check=True, capture_output=True
        ).stdout.decode()

    def memory_alarm(self, on: bool) -> None:
        """Raise (or clear) a memory alarm: RabbitMQ blocks every connection that publishes."""
        self.ctl("-q", "set_vm_memory_high_watermark", *(["absolute", "1"] if on else ["0.4"]))

    def disk_alarm(self, on: bool) -> None:
        """Raise (or clear) a disk alarm: free space below an absurd limit."""
        self.ctl("-q", "set_disk_free_limit", "100000GB" if on else "50MB")


class WorkerProcess:
    """A worker in another language, running (its stdout and stderr merged): its output
    lines, and a way to await one."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    async def line(
        self, prefix: str, *, containing: str = "", nth: int = 1, limit: float = 30
    ) -> str:
        """The `nth` output line starting with `prefix` (and containing `containing`), once
        the worker has printed it."""

        def found() -> str | None:
            matching = [ln for ln in self.lines if ln.startswith(prefix) and containing in ln]
            return matching[nth - 1] if len(matching) >= nth else None

        async with asyncio.timeout(limit), self._changed:
            await self._changed.wait_for(lambda: found() is not None or self._reader.done())
        line = found()
        assert line is not None, f"no line {prefix!r} from the worker: {self.lines}"
        return line

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the worker (unless it ended) and wait for it to end; its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.exited()

    async def exited(self, limit: float = 30) -> int:
        """The worker's exit code, once it has ended by itself."""
        async with asyncio.timeout(limit):
            code = await self.process.wait()
            await self._reader
        return code


def _stopped(task: Path) -> bool:
    """Whether a thread (/proc/PID/task/TID) is stopped by a signal (state T)."""
    try:
        stat = (task / "stat").read_text()
    except FileNotFoundError:
        return True  # gone
    return stat[stat.rindex(")") + 2] in "Tt"


def contracts_for_test(
    directory: Path, prefix: str, examples: Path | None = None
) -> dict[str, str]:
    """Copy the example contracts (operations', or those of `examples`) under
    `prefix.`-names; map example name -> test name."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {}
    for path in (examples or EXAMPLE_CONTRACTS).glob("*.json"):
        op = path.name.removesuffix(".json")
        names[op] = f"{prefix}.{op}"
        shutil.copy(path, directory / f"{prefix}.{op}.json")
    return names


def add_contract(directory: Path, op: str, document: dict[str, object]) -> None:
    (directory / f"{op}.json").write_bytes(orjson.dumps(document))


@dataclass
class RunningGateway:
    settings: Settings
    url: str
    service: GatewayService
    ops: dict[str, str]

    def topic(self, example_name: str) -> str:
        """A topic contract's name in this gateway (example or test contract)."""
        return self.ops[example_name]

    def op(self, example_name: str) -> str:
        return self.ops[example_name]

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_gateway(
    settings: Settings,
    ops: dict[str, str],
    *,
    wait_for_broker: bool = True,
    take_over: bool = True,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[RunningGateway]:
    """Serve a gateway on a free port until the block ends; waits for the broker link.
    `take_over`: its store takes the virtual host over from earlier tests' stores."""
    if take_over:
        await take_over_vhost(settings.broker_url)
    app = create_app(settings, telemetry)
    service: GatewayService = app.state.service
    # A socket already listening takes connections at once; uvicorn serves them once its
    # start-up is done, so nobody has to poll for "started".
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if wait_for_broker:
            assert await service.broker.wait_ready(30), "gateway did not connect to RabbitMQ"
        yield RunningGateway(settings, f"http://127.0.0.1:{port}", service, ops)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def take_over_vhost(broker_url: str) -> None:
    """Let a new test's store take the virtual host over, as an operator retiring a store
    would: delete the queue that pins it to the last test's store (see gateway/broker.py)."""
    url = broker_url.replace(",", " ").split()[0]
    try:
        connection = await aio_pika.connect(url, timeout=10)
    except (OSError, aio_pika.exceptions.AMQPError):
        return  # the broker is down: the test will find out
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(STORE_MARKER_QUEUE)


def make_settings(
    tmp: Path,
    broker_url: str,
    contracts: dict[str, dict[str, object]] | None = None,
    *,
    topics: dict[str, dict[str, object]] | None = None,
    **overrides: object,
) -> tuple[Settings, dict[str, str]]:
    """Settings for a test gateway with the example contracts, plus `contracts` (name ->
    document), all under a fresh prefix; and the map from plain to prefixed names. With
    `topics` (name -> document; {} for none more), the example topic contracts too, and
    these, under the same prefix (else no topics: each is a stream in the test node)."""
    prefix = "t" + secrets.token_hex(4)
    folder = tmp / "contracts"
    ops = contracts_for_test(folder, prefix)
    for name, document in (contracts or {}).items():
        ops[name] = f"{prefix}.{name}"
        add_contract(folder, ops[name], document)
    topics_folder = tmp / "topics"
    if topics is not None:
        ops.update(contracts_for_test(topics_folder, prefix, EXAMPLE_TOPICS))
        for name, document in topics.items():
            ops[name] = f"{prefix}.{name}"
            add_contract(topics_folder, ops[name], document)
    settings = Settings(
        broker_url=broker_url,
        contracts_dir=folder,
        topics_dir=topics_folder,
        store_url=f"sqlite:///{tmp / 'store.sqlite3'}",
    )
    return replace(settings, **overrides), ops  # type: ignore[arg-type]


class TcpProxy:
    """A TCP proxy to `target_port` whose connections a test can cut at will."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection (as a network failure would)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def connection_per_process(
    stack: AsyncExitStack,
    url: str,
    light_op: str,
    workers: int,
    headers: dict[str, str] | None = None,
) -> dict[str, httpx.AsyncClient]:
    """One kept-alive connection to each process of a `gateway serve --workers N`, by
    slot: a connection stays with the process that accepted it, and the id of a light job
    submitted on it ends in that process's slot. (The jobs are left queued.)"""
    found: dict[str, httpx.AsyncClient] = {}
    for _ in range(200):
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        )
        r = await http.post(f"/v1/ops/{light_op}", json={}, headers=headers)
        assert r.status_code == 202, r.text
        found.setdefault(r.json()["id"].rpartition(".")[2], http)
        if len(found) == workers:
            return found
    raise AssertionError(f"connections reached only the processes in slots {sorted(found)}")
