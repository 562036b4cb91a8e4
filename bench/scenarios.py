"""The benchmark's moving parts for one run: the RabbitMQ node, the gateway, the echo
worker, and one function per measurement. Each measurement returns one flat dict of
figures, with the CPU of every process involved as % of one core over its window
(`cpu_<label>`; a gateway's is summed over its supervisor and worker processes)."""

from __future__ import annotations

import functools
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import celery_peer
from bench.http_rpc import run_wrk
from bench.procs import (
    PYTHON,
    ROOT,
    CpuWindow,
    Proc,
    Procs,
    Watched,
    rss_bytes,
    settle,
    tree,
    wait_http_ok,
)
from tests.support import RabbitNode, free_port

CONTRACTS = ROOT / "bench" / "contracts"
# The topic contracts of the topic-stream runs: a copy of schemas/topics/chat.room.json.
TOPIC_CONTRACTS = ROOT / "bench" / "topic-contracts"
GATEWAY = str(ROOT / ".venv" / "bin" / "gateway")
OPS = {"light": "echo.light", "durable": "echo"}
IDLE_OP = "idle"
# Every gateway process and waiter client holds up to N sockets; the open-file hard
# limit here is 20000 per process (root cannot raise it in this container), so more
# waiters than that need more gateway processes and more client processes.
NOFILE = 20_000
MAX_WAITERS = 20_000
# The idle waiters' long-polls wait this long (bench.waiters.HOLD_SECONDS): opening
# 50,000 takes a while, and none may time out before the event.
WAITERS_MAX_WAIT = 300


@dataclass
class Settings:
    duration: float
    warmup: float
    concurrency: int
    waiters: int
    waiters_workers: int = 1
    workers_concurrency: int = 128
    big_waiters: int = 50_000
    big_waiters_workers: int = 4
    topic_subscribers: int = 10_000
    topic_rate: float = 1_000.0
    topic_rate_subscribers: int = 1_000
    topic_rate_seconds: float = 15.0
    topic_rate_drain: float = 15.0
    py_spy: Path | None = None
    """A folder: record the gateway with py-spy during each topic-stream measurement."""


@dataclass
class Gateway:
    proc: Proc
    url: str
    workers: int


@functools.cache
def has_workers_flag() -> bool:
    """Whether this gateway has `serve --workers N` (a supervisor and N processes)."""
    shown = subprocess.run([GATEWAY, "serve", "--help"], capture_output=True, text=True)
    return "--workers" in shown.stdout


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
        self.workers_broker = ""
        self.workers_worker: Proc | None = None
        self.topics_broker = ""
        self.rabbit_pid = 0
        self.runs = 0  # topic-stream measurements made (names their py-spy files)

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        self.node.start()
        self.node_started = True
        self.rabbit_pid = int((self.node.directory / "rabbitmq.pid").read_text().strip())
        # The idle-waiter gateway has a virtual host of its own: its answers queue must
        # not be shared with (and its answers taken by) the main gateway.
        self.waiters_broker = self.node.add_vhost("bench-waiters")
        # So is the `--workers` comparison's: its gateways come and go, with a store
        # of their own, and a vhost is pinned to one store.
        self.workers_broker = self.node.add_vhost("bench-workers")
        self.gateway = self.start_gateway("gateway", self.node.url, workers=1)
        self.worker = self.start_worker("echo-worker", self.node.url)

    def start_worker(self, name: str, broker: str) -> Proc:
        worker = self.procs.start(
            name,
            [
                PYTHON,
                "-m",
                "bench.echo_worker",
                broker,
                "--declare",
                "bench.transient:classic",
                "--declare",
                "bench.durable:quorum",
                *(arg for op in OPS.values() for arg in ("--passive", op)),
            ],
        )
        worker.wait_for_line(lambda line: line == "serving", 30)
        return worker

    def start_gateway(
        self,
        name: str,
        broker: str,
        *,
        workers: int,
        store: str | None = None,
        max_waiters: int = MAX_WAITERS,
        extra: tuple[str, ...] = (),
    ) -> Gateway:
        """`gateway serve` on a free port; `--workers N` when the gateway has it (one
        process is what a gateway without the flag runs anyway)."""
        if has_workers_flag():
            extra = ("--workers", str(workers), *extra)
        elif workers != 1:
            raise RuntimeError("this gateway has no `serve --workers`")
        port = free_port()
        path = self.work / f"{store or name}.sqlite3"
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
                f"sqlite:///{path}",
                "--log-level",
                "warning",
                "--max-waiters",
                str(max_waiters),
                # The idle-waiters run holds them all from a few addresses: a few clients,
                # whose fair share by default would be a fraction.
                "--max-waiters-per-client",
                str(max_waiters),
                *extra,
            ],
            nofile=NOFILE,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(url + "/readyz", 60, proc)
        if workers > 1:
            self._wait_for_processes(proc, workers)
        return Gateway(proc, url, workers)

    @staticmethod
    def _wait_for_processes(proc: Proc, workers: int, timeout: float = 60) -> None:
        """Until the supervisor has its N workers (they start after /readyz first answers)."""
        deadline = time.monotonic() + timeout
        while len(worker_processes(proc.pid)) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name}: fewer than {workers} worker processes")
            time.sleep(0.2)
        settle(proc.pid, timeout)  # its workers done importing and listening

    def start_workers_vhost(self) -> None:
        """The `--workers` comparison's echo worker, on its own vhost, once (after a
        gateway has declared its operations' queues there)."""
        if self.workers_worker is None:
            self.workers_worker = self.start_worker("echo-worker-workers", self.workers_broker)

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
                Watched("gateway", self.gateway.proc.pid, with_children=True),
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
        return {**result, **_cpu_fields(usage, cpu.wall)}

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
        return self._wrk(self.gateway.url, OPS[durability], c, self._watched())

    def _wrk(self, url: str, op: str, concurrency: int, watched: list[Watched]) -> dict[str, Any]:
        s = self.settings
        run_wrk(url, op, concurrency, s.warmup)  # warm-up, discarded
        cpu = CpuWindow(watched)
        cpu.start()
        result = run_wrk(url, op, concurrency, s.duration)
        usage = cpu.stop()
        return {**result, **_cpu_fields(usage, cpu.wall)}

    def gateway_workers(self, workers: int) -> dict[str, Any]:
        """7: light RPC at C=128 against a fresh `gateway serve --workers N` on a vhost
        of its own (with its own echo worker), so 1 and 2 compare like for like."""
        gateway = self.start_gateway(
            f"gateway-workers-{workers}",
            self.workers_broker,
            workers=workers,
            store="gateway-workers",
        )
        try:
            self.start_workers_vhost()  # after a gateway has declared the queues
            assert self.workers_worker is not None
            watched = [
                Watched("rabbitmq", self.rabbit_pid),
                Watched("gateway", gateway.proc.pid, with_children=True),
                Watched("worker", self.workers_worker.pid),
            ]
            result = self._wrk(
                gateway.url, OPS["light"], self.settings.workers_concurrency, watched
            )
            result["gateway_processes"] = len(worker_processes(gateway.proc.pid)) or 1
            result["gateway_rss_mb"] = rss_bytes(gateway.proc.pid, True) / 2**20
            return result
        finally:
            self.procs.stop(gateway.proc)

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

    def idle_waiters(self, n: int, workers: int) -> dict[str, Any]:
        """5: n idle connections on a fresh gateway (`--workers`), held by client
        processes of at most 12,500 each; RSS per connection (summed over the gateway's
        processes) and the fan-out of one event to all of them."""
        # Each process takes ceil(max_waiters / workers), and the processes accept from
        # one shared socket, the least busy taking most: the cap is what a process's
        # open files allow, so it never refuses one of the n.
        max_waiters = (NOFILE - 1_000) * workers
        gateway = self.start_gateway(
            f"gateway-waiters-{n}",
            self.waiters_broker,
            workers=workers,
            store="gateway-waiters",
            max_waiters=max_waiters,
            extra=("--max-wait", str(WAITERS_MAX_WAIT)),
        )
        try:
            client = self.procs.start(
                f"waiters-{n}",
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
                    str(n),
                ],
                nofile=NOFILE,
            )
            try:
                result = client.wait_result(WAITERS_MAX_WAIT)
            finally:
                self.procs.stop(client)
            result["workers"] = workers
            return result
        finally:
            self.procs.stop(gateway.proc)

    # -- topic streams (issue 14) ----------------------------------------------------------

    def _topic_gateway(self, name: str) -> Gateway:
        """A fresh one-process gateway with the bench's topic contracts, on a vhost of its
        own (made once: its streams stay between runs; a feed starts at their end)."""
        if not self.topics_broker:
            self.topics_broker = self.node.add_vhost("bench-topics")
        return self.start_gateway(
            name,
            self.topics_broker,
            workers=1,
            store="gateway-topics",
            extra=("--topics", str(TOPIC_CONTRACTS)),
        )

    def _py_spy(self, name: str) -> list[str]:
        folder = self.settings.py_spy
        if folder is None:
            return []
        folder.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        return ["--py-spy", str(folder / f"{name}-{self.runs}.txt")]

    def topic_subscribers(self, n: int) -> dict[str, Any]:
        """n idle SSE subscribers of one topic on a fresh one-process gateway: RSS per
        subscriber, and the fan-out of one `POST /v1/topics/<topic>` to all of them."""
        gateway = self._topic_gateway(f"gateway-topics-{n}")
        try:
            client = self.procs.start(
                f"topics-{n}",
                [
                    PYTHON,
                    "-m",
                    "bench.topic_streams",
                    "fanout",
                    gateway.url,
                    self.topics_broker,
                    "--gateway-pid",
                    str(gateway.proc.pid),
                    "--n",
                    str(n),
                    *self._py_spy("topics"),
                ],
                nofile=NOFILE,
            )
            try:
                return client.wait_result(WAITERS_MAX_WAIT)
            finally:
                self.procs.stop(client)
        finally:
            self.procs.stop(gateway.proc)

    def topic_rate(self, n: int, rate: float, seconds: float) -> dict[str, Any]:
        """A plain AMQP publisher sends `rate` messages a second for `seconds` to one
        topic with n SSE subscribers on a fresh one-process gateway: loss, order, the
        gateway's CPU per delivered message, latency."""
        gateway = self._topic_gateway(f"gateway-topicrate-{n}")
        try:
            client = self.procs.start(
                f"topicrate-{n}",
                [
                    PYTHON,
                    "-m",
                    "bench.topic_streams",
                    "rate",
                    gateway.url,
                    self.topics_broker,
                    "--gateway-pid",
                    str(gateway.proc.pid),
                    "--rabbit-pid",
                    str(self.rabbit_pid),
                    "--n",
                    str(n),
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                    "--drain",
                    str(self.settings.topic_rate_drain),
                    *self._py_spy("topicrate"),
                ],
                nofile=NOFILE,
            )
            try:
                timeout = seconds * 3 + self.settings.topic_rate_drain + WAITERS_MAX_WAIT
                return client.wait_result(timeout)
            finally:
                self.procs.stop(client)
        finally:
            self.procs.stop(gateway.proc)


def worker_processes(pid: int) -> list[psutil.Process]:
    """A `gateway serve --workers N` supervisor's worker processes (not multiprocessing's
    resource tracker); none for a gateway that is one process."""
    found = []
    for process in tree(pid)[1:]:
        try:
            if "resource_tracker" not in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # gone meanwhile: not one of them any more
            continue
    return found


def _cpu_fields(usage: dict[str, float], wall: float) -> dict[str, Any]:
    return {"cpu_window_s": wall, **{f"cpu_{k}": v for k, v in usage.items()}}


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
