"""The benchmark's moving parts for one run: the RabbitMQ node, the gateway, the echo
worker, and one function per measurement. Each measurement returns one flat dict of
figures, with the CPU of every process involved as % of one core over its window."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import celery_peer
from bench.http_rpc import run_wrk
from bench.procs import PYTHON, ROOT, CpuWindow, Proc, Procs, Watched, wait_http_ok
from tests.support import RabbitNode, free_port

CONTRACTS = ROOT / "bench" / "contracts"
GATEWAY = str(ROOT / ".venv" / "bin" / "gateway")
OPS = {"light": "echo.light", "durable": "echo"}
IDLE_OP = "idle"
# The gateway and the waiter client each hold N sockets; the hard limit here is 20000.
NOFILE = 20_000
MAX_WAITERS = 20_000


@dataclass
class Settings:
    duration: float
    warmup: float
    concurrency: int
    waiters: int


@dataclass
class Gateway:
    proc: Proc
    url: str


class Bench:
    """Everything one run starts, and the measurements made against it."""

    def __init__(self, work: Path, settings: Settings) -> None:
        self.work = work
        self.settings = settings
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = Procs(work / "logs")
        self.node = RabbitNode(work / "rabbit")
        self.node.env["RABBITMQ_LOCAL_NODENAME"] = f"bench-{free_port()}"
        self.node_started = False
        self.gateway: Gateway | None = None
        self.worker: Proc | None = None
        self.waiters_broker = ""
        self.rabbit_pid = 0

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        self.node.start()
        self.node_started = True
        self.rabbit_pid = int((self.node.directory / "rabbitmq.pid").read_text().strip())
        # The idle-waiter gateway has a virtual host of its own: its answers queue must
        # not be shared with (and its answers taken by) the main gateway.
        self.waiters_broker = self.node.add_vhost("bench-waiters")
        self.gateway = self.start_gateway("gateway", self.node.url)
        self.worker = self.procs.start(
            "echo-worker",
            [
                PYTHON,
                "-m",
                "bench.echo_worker",
                self.node.url,
                "--declare",
                "bench.transient:classic",
                "--declare",
                "bench.durable:quorum",
                *(arg for op in OPS.values() for arg in ("--passive", op)),
            ],
        )
        self.worker.wait_for_line(lambda line: line == "serving", 30)

    def start_gateway(self, name: str, broker: str) -> Gateway:
        port = free_port()
        store = self.work / f"{name}.sqlite3"
        proc = self.procs.start(
            name,
            [
                GATEWAY,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--broker",
                broker,
                "--contracts",
                str(CONTRACTS),
                "--store",
                f"sqlite:///{store}",
                "--log-level",
                "warning",
                "--max-waiters",
                str(MAX_WAITERS),
                # The idle-waiters run holds them all from one address: one client, whose
                # fair share by default would be half.
                "--max-waiters-per-client",
                str(MAX_WAITERS),
            ],
            nofile=NOFILE,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(url + "/readyz", 60, proc)
        return Gateway(proc, url)

    def stop(self) -> None:
        self.procs.stop_all()
        if self.node_started:
            self.node.stop()
            self.node_started = False

    # -- helpers ------------------------------------------------------------------------

    def _watched(self, *extra: Watched, gateway: bool = True) -> list[Watched]:
        assert self.worker is not None and self.gateway is not None
        watched = [Watched("rabbitmq", self.rabbit_pid), *extra]
        if gateway:
            watched += [
                Watched("gateway", self.gateway.proc.pid),
                Watched("worker", self.worker.pid),
            ]
        return watched

    def _python_client(self, name: str, argv: list[str], watched: list[Watched]) -> dict[str, Any]:
        """Run a load client; snapshot CPU when it opens its window and when it reports."""
        s = self.settings
        client = self.procs.start(name, [PYTHON, "-m", *argv])
        cpu = CpuWindow(watched)
        try:
            client.wait_for_line(lambda line: line == "MEASURE-START", s.warmup + 60)
            cpu.start()
            result = client.wait_result(s.duration + 60)
            usage = cpu.stop()
        finally:
            self.procs.stop(client)
        return {**result, **{f"cpu_{k}": v for k, v in usage.items()}}

    def _timing(self, concurrency: int | None) -> list[str]:
        s = self.settings
        return [
            "--concurrency",
            str(concurrency or s.concurrency),
            "--duration",
            str(s.duration),
            "--warmup",
            str(s.warmup),
        ]

    # -- the measurements ---------------------------------------------------------------

    def raw_rpc(self, mode: str, concurrency: int | None = None) -> dict[str, Any]:
        """1 / 6: plain aio-pika RPC against the echo worker (no gateway in the path)."""
        assert self.worker is not None
        argv = ["bench.amqp_rpc", self.node.url, "--mode", mode, *self._timing(concurrency)]
        return self._python_client(
            f"amqp-{mode}", argv, [Watched("rabbitmq", self.rabbit_pid), self._worker()]
        )

    def _worker(self) -> Watched:
        assert self.worker is not None
        return Watched("worker", self.worker.pid)

    def gateway_rpc(self, durability: str, concurrency: int | None = None) -> dict[str, Any]:
        """2 / 6: POST /v1/ops/<op>?wait=5 from wrk."""
        assert self.gateway is not None
        s = self.settings
        c = concurrency or s.concurrency
        run_wrk(self.gateway.url, OPS[durability], c, s.warmup)  # warm-up, discarded
        cpu = CpuWindow(self._watched())
        cpu.start()
        result = run_wrk(self.gateway.url, OPS[durability], c, s.duration)
        usage = cpu.stop()
        return {**result, **{f"cpu_{k}": v for k, v in usage.items()}}

    def gateway_async(self, follow: str, durability: str = "durable") -> dict[str, Any]:
        """3: submit (202), then long-poll or SSE to the result."""
        assert self.gateway is not None
        argv = [
            "bench.http_async",
            self.gateway.url,
            "--mode",
            follow,
            "--target",
            OPS[durability],
            *self._timing(None),
        ]
        return self._python_client(f"http-{follow}", argv, self._watched())

    def celery(self) -> dict[str, Any]:
        """4: Celery + Flower's HTTP API on the same node, started for this measurement
        only, so it idles nowhere else."""
        peer = celery_peer.start(
            self.procs, self.node.url, self.work / "celery-results", free_port()
        )
        try:
            argv = [
                "bench.http_async",
                peer.url,
                "--mode",
                "flower",
                "--target",
                celery_peer.TASK,
                *self._timing(None),
            ]
            watched = [
                Watched("rabbitmq", self.rabbit_pid),
                Watched("celery_worker", peer.worker.pid, with_children=True),
                Watched("flower", peer.flower.pid),
            ]
            return self._python_client("http-flower", argv, watched)
        finally:
            peer.stop(self.procs)

    def idle_waiters(self) -> dict[str, Any]:
        """5: N idle connections on a fresh gateway process; RSS per connection and the
        fan-out of one event to all of them."""
        gateway = self.start_gateway("gateway-waiters", self.waiters_broker)
        try:
            client = self.procs.start(
                "waiters",
                [
                    PYTHON,
                    "-m",
                    "bench.waiters",
                    gateway.url,
                    self.waiters_broker,
                    "--gateway-pid",
                    str(gateway.proc.pid),
                    "--op",
                    IDLE_OP,
                    "--n",
                    str(self.settings.waiters),
                ],
                nofile=NOFILE,
            )
            try:
                return client.wait_result(240)
            finally:
                self.procs.stop(client)
        finally:
            self.procs.stop(gateway.proc)


def versions() -> dict[str, str]:
    """Versions of everything measured."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"Python": platform.python_version()}
    for package in ("rabbitmq-server", "erlang-base", "wrk"):
        try:
            found[package] = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", package],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            found[package] = "?"
    for package in ("aio-pika", "aiormq", "uvicorn", "starlette", "sse-starlette", "celery",
                    "kombu", "flower", "tornado", "psutil"):  # fmt: skip
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "?"
    return found


def machine() -> dict[str, str]:
    import os
    import platform

    model = "?"
    memory = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": model,
        "RAM": memory,
        "kernel": platform.release(),
        "OS": platform.platform(),
    }
