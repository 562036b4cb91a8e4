"""Processes of a benchmark run: start them, wait until they serve, measure their CPU and
memory, and stop every one of them at the end (also on Ctrl-C or a failure)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
RESULT_PREFIX = "RESULT "
MEASURE_START = "MEASURE-START"


def raise_nofile(limit: int | None = None) -> int:
    """Raise this process's open-file limit (to the hard limit by default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if limit is None else min(limit, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass
class Proc:
    """A started process; its stdout lines are collected by a thread, so reading them
    never blocks the harness for longer than it chooses to wait."""

    name: str
    popen: subprocess.Popen[str]
    log: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no expected output in {timeout:g} s")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    raise RuntimeError(
                        f"{self.name} exited with {self.popen.returncode}; see {self.log}"
                    ) from None
                continue
            if predicate(line):
                return line

    def wait_result(self, timeout: float) -> dict[str, Any]:
        """The JSON of the `RESULT {...}` line a load client prints at its end."""
        line = self.wait_for_line(lambda s: s.startswith(RESULT_PREFIX), timeout)
        result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
        return result


class Procs:
    """Every process the harness starts; `stop_all` ends them, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> Proc:
        log = self.log_dir / f"{name}.log"

        def before_exec() -> None:
            # Its own process group, so a Ctrl-C in the terminal reaches only the
            # harness, which then stops everything in order.
            os.setpgrp()
            if nofile is not None:
                raise_nofile(nofile)

        popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log.open("a"),
            text=True,
            bufsize=1,
            preexec_fn=before_exec,
        )
        proc = Proc(name, popen, log)
        threading.Thread(target=_pump, args=(proc,), daemon=True).start()
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        if proc in self.running:
            self.running.remove(proc)
        if proc.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def _pump(proc: Proc) -> None:
    assert proc.popen.stdout is not None
    with proc.log.open("a") as log:
        for line in proc.popen.stdout:
            log.write(line)
            log.flush()
            proc.lines.put(line.rstrip("\n"))


def wait_http_ok(url: str, timeout: float, proc: Proc | None = None) -> None:
    """Poll `url` until it answers 200 (a gateway's /readyz, Flower's /healthcheck)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s")


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants alive now: a `gateway serve --workers N`
    supervisor and its N children (and multiprocessing's helper), a prefork pool."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _processes(pid: int, with_children: bool) -> list[psutil.Process]:
    if with_children:
        return tree(pid)
    try:
        return [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []


def cpu_by_pid(pid: int, with_children: bool = False) -> dict[int, float]:
    """User + system CPU seconds (utime + stime) of a process, and of each of its live
    descendants if asked, by pid."""
    found: dict[int, float] = {}
    for process in _processes(pid, with_children):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            found[process.pid] = float(times.user + times.system)
    return found


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of a process (and its live descendants, if asked)."""
    return sum(cpu_by_pid(pid, with_children).values())


def rss_bytes(pid: int, with_children: bool = False) -> int:
    """Resident memory of a process (summed with its live descendants', if asked)."""
    total = 0
    for process in _processes(pid, with_children):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += int(process.memory_info().rss)
    return total


def settle(pid: int, timeout: float, quiet_pct: float = 20.0) -> None:
    """Until a process tree is near idle (below quiet_pct of a core over half a second):
    done starting, importing, accepting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before, t0 = cpu_seconds(pid, True), time.monotonic()
        time.sleep(0.5)
        if 100 * (cpu_seconds(pid, True) - before) / (time.monotonic() - t0) < quiet_pct:
            return


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not waiting on I/O):
    what other processes, outside the ones watched, took in a window."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass(frozen=True)
class Watched:
    """A process whose CPU a measurement reports, under a short label; with_children
    sums its descendants too (the gateway's supervisor and its worker processes)."""

    label: str
    pid: int
    with_children: bool = False


MACHINE = "machine"


class CpuWindow:
    """CPU of several processes over one measurement window: utime + stime deltas, per
    pid, so a process tree is summed over the processes alive at the start and at the
    end (one that appears during the window counts from its first second). `stop`
    returns % of one core per label, and `seconds` the CPU seconds and the window's wall
    time; label "machine" is the whole machine's busy time, all processes included."""

    def __init__(self, watched: Iterable[Watched]) -> None:
        self.watched = list(watched)
        self._start: dict[str, dict[int, float]] = {}
        self._machine0 = 0.0
        self._t0 = 0.0
        self.seconds: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self._start = {w.label: cpu_by_pid(w.pid, w.with_children) for w in self.watched}
        self._machine0 = machine_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        self.wall = max(time.monotonic() - self._t0, 1e-9)
        machine = machine_busy_seconds() - self._machine0
        self.seconds = {}
        for w in self.watched:
            before = self._start[w.label]
            now = cpu_by_pid(w.pid, w.with_children)
            # A process gone by the end is lost for the window's last part: none should
            # end during a measurement, and its seconds up to the start cancel out.
            self.seconds[w.label] = sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())
        self.seconds[MACHINE] = machine
        return {label: 100.0 * cpu / self.wall for label, cpu in self.seconds.items()}
