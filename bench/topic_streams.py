"""Topic streams (issue 14): many idle subscribers, and a sustained message rate.

Two measurements against one `gateway serve` process (`--topics bench/topic-contracts`,
the `chat.room` contract), both with SSE subscribers on
`GET /v1/topics/<topic>/events` (no `after`: each starts at the next message):

`fanout` (the `topics` scenario): N idle subscribers, held by K client processes (each
from its own loopback address, as bench/waiters.py holds job waiters). RSS per
subscriber (the gateway's RSS with all held, minus before, over N), then one message
published with `POST /v1/topics/<topic>` and the time until every subscriber has it
(CLOCK_MONOTONIC, one clock for all processes: the last arrival on any client minus the
moment the POST was sent).

`rate` (the `topicrate` scenario): N subscribers, then a plain AMQP publisher in a
process of its own (aio-pika, publisher confirms; exchange `gateway.topics`, routing key
the topic, as any daemon publishes) sends R messages a second for S seconds. Every
subscriber must see every message, in order: each message carries its index and the
publisher's CLOCK_MONOTONIC stamp (`{"from": "bench", "text": "<index> <ns>"}`), and each
subscriber checks that the indexes come 0, 1, 2, ... and the SSE ids (the stream
offsets) strictly increase. Reported: loss and disorder, the gateway's CPU seconds per
delivered message (utime + stime of the gateway over the window from the first publish
to the last arrival, over messages x subscribers delivered), the delivery latency
(publish to arrival) p50/p99 from every delivery to one subscriber in ten (the others
read every 10 ms, many frames a read, to spare the client's CPU), and what the clients
cost.

The clients read the streams with a bare asyncio Protocol on uvloop and one regular
expression per read (no HTTP client, no per-frame parsing beyond it), so that on this
2-core machine they take as little as they can from the gateway's core; their CPU is
reported beside the gateway's.

    python -m bench.topic_streams fanout URL AMQP_URL --gateway-pid PID --n 10000
    python -m bench.topic_streams rate URL AMQP_URL --gateway-pid PID --n 1000 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import math
import multiprocessing
import re
import resource
import socket
import subprocess
import time
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from operator import lt
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.http11 import IP_BIND_ADDRESS_NO_PORT, Connection
from bench.procs import ROOT, cpu_seconds, raise_nofile, rss_bytes, tree
from bench.stats import percentile, print_result

FANOUT_TOPIC = "chat.room.fanout"
RATE_TOPIC = "chat.room.rate"
FAMILY = "chat.room"  # the contract both topics are keys of
TOPICS_EXCHANGE = "gateway.topics"
SENDER = "bench"
FIRST_SOURCE = "127.0.0.2"
PER_CLIENT = 12_500  # subscribers per client process at most: under the open-file limit
OPENING = 500  # subscribers being opened at once, all clients together
QUIET_PCT = 20.0  # the gateway has settled when it uses less than this % of a core
READY_TIMEOUT = 300.0
PY_SPY = str(ROOT / ".venv" / "bin" / "py-spy")

# One message frame, as the gateway writes it (sse-starlette's encoding, CRLF lines):
# its id (the stream offset), and the index and publish stamp the text carries.
FRAME = re.compile(
    rb'id: (\d+)\r\nevent: message\r\ndata: [^\r]*?"text":"(\d+) (\d+)"[^\r]*\r\n\r\n'
)
READ_EVERY = 0.01  # seconds between the lazy subscribers' reads, at a sustained rate
EAGER = 10  # every EAGERth subscriber reads at once and times its deliveries
TAIL = 1024  # bytes kept from one read for the next: a frame cut by the read's end

# Latency histogram: 50 µs buckets up to 100 ms, then 1 ms buckets up to 60 s.
FINE_US, FINE = 50, 2000
COARSE_US, COARSE = 1000, 59_900
BUCKETS = FINE + COARSE


def now() -> float:
    """CLOCK_MONOTONIC: system-wide on Linux, so stamps compare across processes."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def bucket_upper_ms(b: int) -> float:
    if b < FINE:
        return (b + 1) * FINE_US / 1000
    return (FINE * FINE_US + (b - FINE + 1) * COARSE_US) / 1000


def hist_percentile(hist: list[int], fraction: float) -> float:
    """The upper bound (ms) of the bucket holding the nearest-rank percentile."""
    total = sum(hist)
    if not total:
        return math.nan
    rank = max(1, round(fraction * total))
    seen = 0
    for b, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return bucket_upper_ms(b)
    return bucket_upper_ms(len(hist) - 1)


def message(index: int) -> bytes:
    """A `chat.room` message carrying its index and its publish stamp."""
    return b'{"from":"%s","text":"%d %d"}' % (SENDER.encode(), index, now_ns())


# -- the subscribers ---------------------------------------------------------------------


class Group:
    """The subscribers of one client process: what they saw, and when all are done."""

    def __init__(self, expected: int, read_every: float = 0.0) -> None:
        self.expected = expected
        """Messages each subscriber must see (indexes 0 .. expected-1)."""
        self.read_every = read_every
        """If set, subscribers other than the eager ones (every `EAGER`th) read at most
        this often: between reads the kernel gathers frames, so one read takes many (at a
        sustained rate a read per frame is most of the client's CPU). Only the eager ones
        time their deliveries, so lazy reading adds nothing to the latency reported."""
        self.paused: list[Any] = []
        self.hist = [0] * BUCKETS
        self.ids = tuple(b"%d" % i for i in range(expected))
        """Each message's index as its text carries it: a read's are compared at once."""
        self.first: list[float] = []  # when each subscriber got its first message
        self.subscribers: list[Subscriber] = []
        self.reasons: Counter[str] = Counter()
        self.remaining = 0
        self.done = asyncio.Event()

    async def resume_reading(self) -> None:
        """Every `read_every` seconds, the lazy subscribers read again."""
        while True:
            await asyncio.sleep(self.read_every)
            paused, self.paused = self.paused, []
            for transport in paused:
                if not transport.is_closing():
                    transport.resume_reading()

    def finished(self, subscriber: Subscriber) -> None:
        if not subscriber.finished:
            subscriber.finished = True
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()

    def summary(self) -> dict[str, Any]:
        """Per subscriber: complete (every message, in order), or with a gap (a message
        lost: a later one came without it), out of order, or cut short (no gap, but the
        last messages had not come when the client stopped: a backlog, not a loss)."""
        complete = lost = disordered = short = 0
        examples: list[str] = []
        for s in self.subscribers:
            if s.status != 200:
                continue
            if s.count == self.expected and not s.gaps and not s.disorder:
                complete += 1
                continue
            lost += bool(s.gaps)
            disordered += bool(s.disorder)
            short += s.next_index < self.expected
            if len(examples) < 3:
                examples.append(
                    f"{s.count:,}/{self.expected:,} seen, {s.gaps} gap(s) ({s.missing:,} "
                    f"missing), {s.disorder} out of order; "
                    f"{s.first_problem or 'the rest not yet delivered'}"
                )
        opened = [s for s in self.subscribers if s.status == 200]
        return {
            "opened": len(opened),
            "complete": complete,
            "with_loss": lost,
            "with_disorder": disordered,
            "cut_short": short,
            "missing": sum(s.missing for s in opened),
            "undelivered": sum(self.expected - s.next_index for s in opened),
            "delivered": sum(s.count for s in self.subscribers),
            "examples": examples,
        }


class Subscriber(asyncio.Protocol):
    """One SSE subscription: sends its GET, then scans what arrives for message frames,
    checking their order; records each delivery's latency in the group's histogram."""

    __slots__ = (
        "count",
        "disorder",
        "eager",
        "finished",
        "first_problem",
        "gaps",
        "group",
        "last_seq",
        "missing",
        "next_index",
        "opened",
        "request",
        "status",
        "tail",
        "transport",
    )

    def __init__(self, group: Group, request: bytes, opened: asyncio.Future[int]) -> None:
        self.group = group
        self.request = request
        self.opened = opened
        self.transport: Any = None  # uvloop's transports are no asyncio.Transport
        self.status = 0
        self.tail = b""
        self.count = 0
        self.last_seq = -1
        self.next_index = 0
        self.gaps = 0
        self.missing = 0
        self.disorder = 0
        self.first_problem = ""
        self.finished = False
        self.eager = not group.read_every or len(group.subscribers) % EAGER == 0
        """Reads as soon as data comes, and times each delivery (see `Group.read_every`)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        arrived = now_ns()
        if self.tail:
            data = self.tail + data
        if not self.status:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.tail = data
                return
            try:
                self.status = int(data[9:12])
            except ValueError:
                self.status = -1
            if not self.opened.done():
                self.opened.set_result(self.status)
            if self.status != 200:
                self.group.reasons[f"status {self.status}"] += 1
                self.group.finished(self)
                self.close()
                return
            data = data[end + 4 :]
        found = FRAME.findall(data)
        cut = data.rfind(b"\r\n\r\n")  # every complete message frame ends before it
        rest = data[cut + 4 :] if cut >= 0 else data
        self.tail = rest if len(rest) <= TAIL else rest[-TAIL:]
        if not found:
            return
        # Checked a read at a time, in C where it can be: the indexes against the ones
        # expected next, the ids (stream offsets) for a strict increase.
        group = self.group
        seqs, indexes, stamps = zip(*found, strict=True)
        n = len(indexes)
        start = self.next_index
        if indexes == group.ids[start : start + n]:
            self.next_index = start + n
        else:
            self._check_indexes(indexes, seqs)
        offsets = list(map(int, seqs))
        if offsets[0] <= self.last_seq or not all(map(lt, offsets, offsets[1:])):
            self._check_offsets(offsets, indexes)
        self.last_seq = max(self.last_seq, offsets[-1])
        if not self.count:
            group.first.append(arrived / 1e9)
        self.count += n
        if self.next_index >= group.expected and not self.finished:
            group.finished(self)
        if not self.eager and not self.transport.is_closing():
            self.transport.pause_reading()
            group.paused.append(self.transport)
            return
        hist = group.hist
        for stamp in map(int, stamps):
            us = (arrived - stamp) // 1000
            if us < FINE * FINE_US:
                hist[max(us, 0) // FINE_US] += 1
            else:
                hist[min(FINE + (us - FINE * FINE_US) // COARSE_US, BUCKETS - 1)] += 1

    def _check_indexes(self, indexes: tuple[bytes, ...], seqs: tuple[bytes, ...]) -> None:
        """Message by message: a gap (messages missing), or one that came again or late."""
        for raw, seq in zip(indexes, seqs, strict=True):
            index = int(raw)
            if index < self.next_index:
                self.disorder += 1
                if not self.first_problem:
                    self.first_problem = (
                        f"message {index} (seq {int(seq)}) after message {self.next_index - 1}"
                    )
                continue
            if index > self.next_index:
                self.gaps += 1
                self.missing += index - self.next_index
                if not self.first_problem:
                    self.first_problem = f"messages {self.next_index}..{index - 1} missing"
            self.next_index = index + 1

    def _check_offsets(self, offsets: list[int], indexes: tuple[bytes, ...]) -> None:
        last = self.last_seq
        for offset, index in zip(offsets, indexes, strict=True):
            if offset <= last:
                self.disorder += 1
                if not self.first_problem:
                    self.first_problem = (
                        f"message {int(index)} has id {offset}, not above the previous {last}"
                    )
            last = max(last, offset)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(-1)
        if not self.finished:
            self.group.reasons["connection lost" if self.status == 200 else "not opened"] += 1
            self.group.finished(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def subscribe(
    group: Group, host: str, port: int, topic: str, source: str | None
) -> asyncio.Future[int]:
    """Open one subscription from `source`; the future of its response status."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[int] = loop.create_future()
    request = (
        f"GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    subscriber = Subscriber(group, request, opened)  # before it joins the group
    group.subscribers.append(subscriber)
    group.remaining += 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(lambda: subscriber, sock=sock)
    except OSError as exc:
        sock.close()
        group.reasons[f"connect {type(exc).__name__}"] += 1
        group.finished(subscriber)
        if not opened.done():
            opened.set_result(-1)
    return opened


async def open_all(
    group: Group, host: str, port: int, topic: str, n: int, source: str | None, batch: int
) -> None:
    """n subscriptions, batch at a time: a batch is done when every one has its response
    head, so the client goes at the pace the gateway accepts."""
    for start in range(0, n, batch):
        opened = await asyncio.gather(
            *(subscribe(group, host, port, topic, source) for _ in range(min(batch, n - start)))
        )
        await asyncio.gather(*opened)


def close_all(group: Group) -> None:
    for subscriber in group.subscribers:
        subscriber.close()


# -- a client process ----------------------------------------------------------------------


def client_process(
    pipe: Pipe,
    host: str,
    port: int,
    topic: str,
    n: int,
    source: str,
    batch: int,
    expected: int,
    read_every: float,
) -> None:
    """Hold n subscriptions from `source`; report when they are open, then what they saw
    (when each has its last message, or the coordinator says stop)."""
    raise_nofile()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with the server extra
        runner = asyncio.run
    runner(_client(pipe, host, port, topic, n, source, batch, expected, read_every))


async def _client(
    pipe: Pipe,
    host: str,
    port: int,
    topic: str,
    n: int,
    source: str,
    batch: int,
    expected: int,
    read_every: float,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)  # the coordinator gave up waiting
    group = Group(expected, read_every)
    started = now()
    await open_all(group, host, port, topic, n, source, batch)
    resuming = asyncio.ensure_future(group.resume_reading()) if read_every else None
    progress: list[tuple[float, int, int, int]] = []
    sampling = asyncio.ensure_future(_progress(group, progress)) if read_every else None
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector pause inside the timed part
    opened = sum(1 for s in group.subscribers if s.status == 200)
    pipe.send(("ready", {"open_seconds": now() - started, "opened": opened,
                         "reasons": dict(group.reasons)}))  # fmt: skip
    cpu0 = time.process_time()
    waits = [asyncio.ensure_future(group.done.wait()), asyncio.ensure_future(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    done_at = now()
    for task in (resuming, sampling):
        if task is not None:
            task.cancel()
    cpu = time.process_time() - cpu0
    loop.remove_reader(pipe.fileno())
    close_all(group)
    pipe.send(
        (
            "done",
            {
                **group.summary(),
                "hist": group.hist,
                "first": group.first,
                "progress": progress,
                "source": source,
                "reasons": dict(group.reasons),
                "done_at": done_at,
                "cpu_s": cpu,
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
        )
    )
    await asyncio.sleep(0.1)


async def _progress(group: Group, out: list[tuple[float, int, int, int]]) -> None:
    """Every second: (when, deliveries so far, the furthest behind subscriber's next
    index, the furthest ahead's), to show how the subscribers kept pace."""
    while True:
        await asyncio.sleep(1.0)
        nexts = [s.next_index for s in group.subscribers if s.status == 200]
        out.append((now(), sum(s.count for s in group.subscribers), min(nexts, default=0),
                    max(nexts, default=0)))  # fmt: skip


# -- the publisher (rate) ------------------------------------------------------------------


def publisher_process(pipe: Pipe, amqp_url: str, topic: str, rate: float, count: int) -> None:
    import uvloop

    uvloop.run(_publisher(pipe, amqp_url, topic, rate, count))


async def _publisher(pipe: Pipe, amqp_url: str, topic: str, rate: float, count: int) -> None:
    """`count` messages at `rate` a second to `gateway.topics`, routing key `topic`, with
    publisher confirms (each 10 ms tick's messages in flight together)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(TOPICS_EXCHANGE, ensure=False)
    pipe.send(("ready", {}))
    await asyncio.to_thread(pipe.recv)  # "go"
    cpu0 = time.process_time()
    started = now()
    sent = 0
    behind = 0.0  # the most the publisher fell behind its schedule, s
    tick = 0.01
    while sent < count:
        due = min(count, int((now() - started) * rate) + 1)
        if due > sent:
            behind = max(behind, (now() - started) - sent / rate)
            batch = [
                exchange.publish(
                    aio_pika.Message(
                        message(i),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=topic,
                )
                for i in range(sent, due)
            ]
            sent = due
            await asyncio.gather(*batch)
        next_at = started + sent / rate
        await asyncio.sleep(max(0.0, min(tick, next_at - now())))
    ended = now()
    cpu = time.process_time() - cpu0
    await connection.close()
    pipe.send(("done", {"sent": sent, "started": started, "ended": ended,
                        "seconds": ended - started, "cpu_s": cpu, "behind_s": behind}))  # fmt: skip


async def publish_amqp(amqp_url: str, topic: str, indexes: range) -> None:
    """A few messages, confirmed (the warm-up)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(TOPICS_EXCHANGE, ensure=False)
        for i in indexes:
            await exchange.publish(
                aio_pika.Message(message(i), content_type="application/json"), routing_key=topic
            )
    finally:
        await connection.close()


# -- the coordinator -----------------------------------------------------------------------


def sources(k: int) -> list[str]:
    first = ipaddress.IPv4Address(FIRST_SOURCE)
    return [str(first + i) for i in range(k)]


def open_files(pid: int) -> int:
    total = 0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.num_fds()
    return total


async def settle(pid: int, timeout: float) -> None:
    """Until the gateway is near idle: done accepting and registering."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before, t0 = cpu_seconds(pid, True), time.monotonic()
        await asyncio.sleep(0.5)
        if 100 * (cpu_seconds(pid, True) - before) / (time.monotonic() - t0) < QUIET_PCT:
            return


async def _recv(pipe: Pipe, timeout: float) -> tuple[str, dict[str, Any]]:
    if not await asyncio.to_thread(pipe.poll, timeout):
        raise TimeoutError("a client process did not report in time")
    got: tuple[str, dict[str, Any]] = pipe.recv()
    return got


class Clients:
    """K client processes holding n subscriptions between them."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        n: int,
        k: int,
        expected: int,
        read_every: float = 0.0,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs: list[Any] = []
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        for share, source in zip(shares, sources(k), strict=True):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=client_process,
                args=(
                    *(theirs, host, port, topic, share, source),
                    *(max(25, OPENING // k), expected, read_every),
                ),
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)

    async def ready(self) -> list[dict[str, Any]]:
        return [(await _recv(pipe, READY_TIMEOUT))[1] for pipe in self.pipes]

    async def done(self, timeout: float) -> list[dict[str, Any]]:
        """Each client's report: when all its subscribers are done, or at `timeout`
        (then told to stop and report what they have)."""
        deadline = time.monotonic() + timeout
        reports = []
        for pipe in self.pipes:
            try:
                reports.append((await _recv(pipe, max(0.1, deadline - time.monotonic())))[1])
            except TimeoutError:
                pipe.send("stop")
                reports.append((await _recv(pipe, 30))[1])
        return reports

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


class Profiler:
    """py-spy samples of the gateway over a window, if asked (`--py-spy FILE`)."""

    def __init__(self, pid: int, out: Path | None, seconds: float) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = out
        if out is not None:
            self.proc = subprocess.Popen(
                [
                    *(PY_SPY, "record", "--pid", str(pid), "--rate", "500"),
                    *("--format", "raw", "--duration", str(max(1, math.ceil(seconds)))),
                    *("--output", str(out), "--nonblocking"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    async def finish(self) -> dict[str, Any]:
        if self.proc is None or self.out is None:
            return {}
        await asyncio.to_thread(self.proc.wait)
        return {"profile": summarize(self.out)}


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares of the gateway's functions (a raw py-spy file)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "samples": total,
        "self": [(f, c / total) for f, c in own.most_common(top)] if total else [],
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(top * 2)] if total else [],
        "file": str(path),
    }


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:123)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/lib/python3.":
                where = where.split("/", 1)[-1]  # past the version: asyncio/runners.py
            break
    return f"{name} ({where})"


async def warm_up(host: str, port: int, topic: str, n: int, publish: Any) -> None:
    """A few subscribers through a whole cycle, so one-time costs (imports, first
    allocations, the feed's start) are not charged to the measured ones."""
    group = Group(1)
    await open_all(group, host, port, topic, n, None, n)
    await publish()
    try:
        async with asyncio.timeout(30):
            await group.done.wait()
    finally:
        close_all(group)
    if group.summary()["complete"] != n:
        raise RuntimeError(f"warm-up: {group.summary()}, {dict(group.reasons)}")


async def post_message(host: str, port: int, topic: str, index: int) -> float:
    """POST one message; the seconds until the gateway's 202."""
    connection = Connection(host, port)
    try:
        t0 = now()
        response = await connection.request("POST", f"/v1/topics/{topic}", message(index))
        if response.status != 202:
            raise RuntimeError(f"publish answered {response.status}: {response.body[:200]!r}")
        return now() - t0
    finally:
        connection.close()


async def fanout(
    base_url: str, n: int, gateway_pid: int, warm: int, k: int, py_spy: Path | None
) -> dict[str, Any]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    topic = FANOUT_TOPIC
    await warm_up(host, port, topic, warm, lambda: post_message(host, port, topic, 0))
    await asyncio.sleep(1.0)
    await settle(gateway_pid, 30)
    rss_before = rss_bytes(gateway_pid, True)
    fds_before = open_files(gateway_pid)
    cpu_before = cpu_seconds(gateway_pid, True)
    opening = now()
    clients = Clients(host, port, topic, n, k, expected=1)
    try:
        ready = await clients.ready()
        connect_seconds = now() - opening
        for _ in range(150):  # up to 30 s for the gateway to take the last of them
            if open_files(gateway_pid) - fds_before >= n:
                break
            await asyncio.sleep(0.2)
        held = open_files(gateway_pid) - fds_before
        await asyncio.sleep(1.0)
        await settle(gateway_pid, 30)
        rss_after = rss_bytes(gateway_pid, True)
        cpu_opened = cpu_seconds(gateway_pid, True)
        profiler = Profiler(gateway_pid, py_spy, 4)
        if py_spy is not None:
            await asyncio.sleep(1.5)  # py-spy attached before the message goes
        gc.disable()
        published = now()
        post_seconds = await post_message(host, port, topic, 0)
        reports = await clients.done(30)
        cpu_fanout = cpu_seconds(gateway_pid, True) - cpu_opened
        gc.enable()
        profile = await profiler.finish()
    finally:
        clients.stop()
    received = sorted(t - published for r in reports for t in r["first"])
    reasons: Counter[str] = Counter()
    for r in reports:
        reasons.update(r["reasons"])
    complete = sum(r["complete"] for r in reports)
    return {
        "n": n,
        "held": held,
        "received": len(received),
        "complete": complete,
        "failed": n - complete,
        "failed_while_opening": n - sum(r["opened"] for r in ready),
        "failures": dict(reasons),
        "clients": k,
        "workers": 1,
        "connect_seconds": connect_seconds,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_per_conn_kb": (rss_after - rss_before) / max(held, 1) / 1024,
        "gateway_cpu_connect_s": cpu_opened - cpu_before,
        "gateway_cpu_connect_ms_each": 1000 * (cpu_opened - cpu_before) / max(held, 1),
        "post_ms": post_seconds * 1000,
        "fanout_first_ms": received[0] * 1000 if received else math.nan,
        "fanout_p50_ms": percentile(received, 0.5) * 1000,
        "fanout_p99_ms": percentile(received, 0.99) * 1000,
        "fanout_all_ms": received[-1] * 1000 if received else math.nan,
        "fanout_last_per_client_ms": [
            (max(r["first"], default=math.nan) - published) * 1000 for r in reports
        ],
        "gateway_fanout_cpu_s": cpu_fanout,
        "gateway_fanout_us_each": 1e6 * cpu_fanout / max(len(received), 1),
        "client_fanout_cpu_s": sum(r["cpu_s"] for r in reports),
        "client_max_rss_mb": max(r["max_rss_mb"] for r in reports),
        **profile,
    }


async def rate(
    base_url: str,
    amqp_url: str,
    n: int,
    gateway_pid: int,
    rabbit_pid: int,
    warm: int,
    k: int,
    per_second: float,
    seconds: float,
    drain: float,
    py_spy: Path | None,
) -> dict[str, Any]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    topic = RATE_TOPIC
    count = round(per_second * seconds)
    await warm_up(host, port, topic, warm, lambda: publish_amqp(amqp_url, topic, range(1)))
    await settle(gateway_pid, 30)
    rss_before = rss_bytes(gateway_pid, True)
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    publisher = context.Process(
        target=publisher_process, args=(theirs, amqp_url, topic, per_second, count), daemon=True
    )
    publisher.start()
    theirs.close()
    clients = Clients(host, port, topic, n, k, expected=count, read_every=READ_EVERY)
    rss_peak = 0
    try:
        ready = await clients.ready()
        await _recv(mine, 60)  # the publisher is connected
        await asyncio.sleep(1.0)
        await settle(gateway_pid, 30)
        rss_held = rss_bytes(gateway_pid, True)
        opened = sum(r["opened"] for r in ready)
        profiler = Profiler(gateway_pid, py_spy, seconds)
        if py_spy is not None:
            await asyncio.sleep(1.5)
        cpu0 = cpu_seconds(gateway_pid, True)
        rabbit0 = cpu_seconds(rabbit_pid) if rabbit_pid else math.nan
        machine0 = _machine_busy()
        watch = GatewayWatch(gateway_pid, host, port, FAMILY)
        await watch.start()
        t0 = now()
        mine.send("go")
        published = (await _recv(mine, seconds * 3 + 60))[1]
        reports = await clients.done(drain)
        t1 = now()
        gateway_cpu = cpu_seconds(gateway_pid, True) - cpu0
        rabbit_cpu = cpu_seconds(rabbit_pid) - rabbit0 if rabbit_pid else math.nan
        machine = _machine_busy() - machine0
        await watch.stop()
        rss_peak = watch.peak
        profile = await profiler.finish()
    finally:
        clients.stop()
        publisher.join(10)
        if publisher.is_alive():
            publisher.kill()
    hist = [sum(column) for column in zip(*(r["hist"] for r in reports), strict=True)]
    timeline = _timeline(reports, published["started"], per_second, count, watch.feed)
    delivered = sum(r["delivered"] for r in reports)
    last_arrival = max(r["done_at"] for r in reports)
    window = max(t1 - t0, 1e-9)
    reasons: Counter[str] = Counter()
    for r in reports:
        reasons.update(r["reasons"])
    problems = []
    with_loss = sum(r["with_loss"] for r in reports)
    with_disorder = sum(r["with_disorder"] for r in reports)
    cut_short = sum(r["cut_short"] for r in reports)
    complete = sum(r["complete"] for r in reports)
    if complete < n:
        examples = [e for r in reports for e in r["examples"]][:2]
        problems.append(
            f"{n - complete:,} of {n:,} subscribers did not see all {count:,} messages in "
            f"order: {with_loss:,} with a gap ({sum(r['missing'] for r in reports):,} "
            f"messages lost), {with_disorder:,} out of order, {cut_short:,} still behind "
            f"{drain:g} s after the last publish "
            f"({sum(r['undelivered'] for r in reports):,} messages not yet delivered); "
            f"connections: {dict(reasons) or 'none failed'}; e.g. {'; '.join(examples)}"
        )
    return {
        "n": n,
        "opened": opened,
        "rate": per_second,
        "seconds": seconds,
        "messages": count,
        "sent": published["sent"],
        "publish_seconds": published["seconds"],
        "publisher_behind_s": published["behind_s"],
        "publisher_cpu_s": published["cpu_s"],
        "complete": complete,
        "with_loss": with_loss,
        "with_disorder": with_disorder,
        "missing": sum(r["missing"] for r in reports),
        "cut_short": cut_short,
        "undelivered": sum(r["undelivered"] for r in reports),
        "failures": dict(reasons),
        "problems": problems,
        "delivered": delivered,
        "expected": count * n,
        "window_s": window,
        "drain_s": last_arrival - published["ended"],
        "delivered_per_s": delivered / window,
        "latency_p50_ms": hist_percentile(hist, 0.5),
        "latency_p99_ms": hist_percentile(hist, 0.99),
        "latency_max_ms": hist_percentile(hist, 1.0),
        "gateway_cpu_s": gateway_cpu,
        "gateway_cpu_pct": 100 * gateway_cpu / window,
        "gateway_us_per_delivered": 1e6 * gateway_cpu / max(delivered, 1),
        "gateway_us_per_message": 1e6 * gateway_cpu / max(published["sent"], 1),
        "rabbitmq_cpu_pct": 100 * rabbit_cpu / window,
        "machine_busy_pct": 100 * machine / window,
        "client_cpu_s": sum(r["cpu_s"] for r in reports),
        "client_cpu_pct": 100 * sum(r["cpu_s"] for r in reports) / window,
        "client_us_per_delivered": 1e6 * sum(r["cpu_s"] for r in reports) / max(delivered, 1),
        "clients": k,
        "rss_before_mb": rss_before / 2**20,
        "rss_held_mb": rss_held / 2**20,
        "rss_peak_mb": max(rss_peak, rss_held) / 2**20,
        "rss_per_conn_kb": (rss_held - rss_before) / max(opened, 1) / 1024,
        "timeline": timeline,
        **profile,
    }


def _timeline(
    reports: list[dict[str, Any]],
    started: float,
    per_second: float,
    count: int,
    feed: list[tuple[float, float]],
) -> list[list[float]]:
    """Per whole second from the first publish: [second, deliveries in it (all clients),
    the slowest subscriber's messages so far, the fastest's, the messages published,
    the messages the gateway's feed had taken in]."""
    seconds: dict[int, list[float]] = {}
    fed = {math.floor(t - started): taken for t, taken in feed}
    for report in reports:
        last_count = 0
        for t, seen, low, high in report.get("progress", []):
            second = math.floor(t - started)
            if second >= 0:
                row = seconds.setdefault(second, [second, 0, math.inf, 0, 0, math.nan])
                row[1] += seen - last_count
                row[2] = min(row[2], low)
                row[3] = max(row[3], high)
                row[4] = min(count, round(per_second * (t - started)))
            last_count = seen
    for second, row in seconds.items():
        row[5] = fed.get(second, math.nan)
    return [seconds[k] for k in sorted(seconds)]


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


FEED_COUNTER = re.compile(rb"^gateway_topic_messages_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


async def feed_count(connection: Connection, family: str) -> float:
    """The messages the gateway's feed of `family` has taken in (its /metrics)."""
    response = await connection.request("GET", "/metrics")
    for labels, value in FEED_COUNTER.findall(response.body):
        if b'outcome="delivered"' in labels and b'topic="%s"' % family.encode() in labels:
            return float(value)
    return 0.0


class GatewayWatch:
    """Every second while the publisher runs: the gateway's RSS (for its peak), and how
    many messages its feed has taken in from the stream (from /metrics), to tell a feed
    behind the stream from subscribers behind the feed."""

    def __init__(self, pid: int, host: str, port: int, family: str) -> None:
        self.pid = pid
        self.connection = Connection(host, port)
        self.family = family
        self.peak = 0
        self.feed: list[tuple[float, float]] = []
        self.base = 0.0
        self.task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.base = await feed_count(self.connection, self.family)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid, True))
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                taken = await feed_count(self.connection, self.family) - self.base
                self.feed.append((now(), taken))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("fanout", "rate"))
    parser.add_argument("url")
    parser.add_argument("amqp_url")
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--rabbit-pid", type=int, default=0)
    parser.add_argument("--n", type=int, default=0, help="subscribers (10,000; rate: 1,000)")
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--clients", type=int, default=0, help="client processes (default 2+)")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages a second (rate)")
    parser.add_argument("--seconds", type=float, default=15.0, help="publishing time (rate)")
    parser.add_argument(
        "--drain", type=float, default=60.0, help="seconds after the last publish to wait"
    )
    parser.add_argument("--py-spy", type=Path, help="record the gateway with py-spy into FILE")
    args = parser.parse_args()
    n = args.n or (10_000 if args.mode == "fanout" else 1_000)
    k = args.clients or max(2, math.ceil(n / PER_CLIENT))
    if math.ceil(n / k) + 100 > raise_nofile():
        raise SystemExit(f"open-file limit too low for {n} subscribers over {k} clients")
    if args.mode == "fanout":
        result = asyncio.run(fanout(args.url, n, args.gateway_pid, args.warm, k, args.py_spy))
    else:
        result = asyncio.run(
            rate(
                args.url,
                args.amqp_url,
                n,
                args.gateway_pid,
                args.rabbit_pid,
                args.warm,
                k,
                args.rate,
                args.seconds,
                args.drain,
                args.py_spy,
            )
        )
    print_result(json.loads(json.dumps(result, default=str)))


if __name__ == "__main__":
    main()
