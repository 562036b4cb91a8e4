"""Small numeric helpers shared by the load clients and the report."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.procs import MEASURE_START, RESULT_PREFIX


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaNs
    return statistics.median(clean) if clean else float("nan")


class Window:
    """A load client's measurement window: latencies, count, errors and its own CPU.

    Warm-up traffic is not recorded; `open` marks the start (and tells the harness, which
    snapshots the other processes' CPU at that moment) and `close` the end."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies: list[float] = []
        self.errors = 0
        self._wall0 = 0.0
        self._cpu0 = 0.0
        self.wall = 0.0
        self.cpu = 0.0

    def open(self) -> None:
        print(MEASURE_START, flush=True)
        self.recording = True
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def close(self) -> None:
        self.recording = False
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0

    def ok(self, seconds: float) -> None:
        if self.recording:
            self.latencies.append(seconds)

    def failed(self) -> None:
        if self.recording:
            self.errors += 1

    def summary(self, **extra: Any) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": len(lat),
            "errors": self.errors,
            "seconds": self.wall,
            "rps": len(lat) / self.wall if self.wall else 0.0,
            "p50_ms": percentile(lat, 0.50) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
            "client_cpu_pct": 100.0 * self.cpu / self.wall if self.wall else 0.0,
            **extra,
        }


def print_result(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)
