"""Gateway RPC under load from wrk, a separate C program: `POST /v1/ops/<op>?wait=5` with
C connections, each sending its next request as soon as the previous one is answered.

    wrk -t1 -c64 -d10s --timeout 10s -s bench/post.lua 'http://HOST:PORT/v1/ops/echo.light?wait=5'
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procs import RESULT_PREFIX

SCRIPT = Path(__file__).resolve().parent / "post.lua"


def run_wrk(base_url: str, op: str, concurrency: int, duration: float) -> dict[str, Any]:
    """One wrk run; its figures plus its own CPU (from the kernel's rusage at exit) and
    its count of answers other than 200 (a 202 means the answer took longer than wait=5)."""
    argv = [
        "wrk",
        "-t1",  # one thread keeps wrk's CPU low; it is far from its limit here
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        f"{base_url}/v1/ops/{op}?wait=5",
    ]
    started = time.monotonic()
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert popen.stdout is not None
        output = popen.stdout.read()
        _, status, usage = os.wait4(popen.pid, 0)
        popen.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if popen.returncode is None:
            popen.kill()
            popen.wait()
    wall = time.monotonic() - started
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if popen.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({popen.returncode}): {output[-500:]}")
    raw = json.loads(lines[-1][len(RESULT_PREFIX) :])
    seconds = raw["duration_us"] / 1e6
    errors = (
        raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["status_errors"]
        + raw["timeouts"]
    )
    return {
        "requests": raw["requests"],
        "errors": errors,
        "not_200": raw["not_200"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "client_cpu_pct": 100.0 * (usage.ru_utime + usage.ru_stime) / wall,
        "concurrency": concurrency,
    }
