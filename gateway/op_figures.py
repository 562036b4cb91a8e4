"""An operation's recent figures (`GET /v1/ops/{op}/stats`), worked out from the jobs the
store lists (`JobStore.recent_timings`): how many were accepted and finished, how they
ended, and how long they waited and ran. Pure: no I/O, so it is tested on its own.

The store answers with at most `limit` jobs, newest first by `updated_at`. When it hits
that limit the figures cover a shorter span than asked: every job updated since the oldest
one sampled is in the sample, so counts and rates over that span are exact, and the span
is what `window_seconds` then says (with `complete: false`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from gateway.store.base import JobTiming
from gateway.types import TERMINAL_STATUSES, JSONObject

OUTCOMES = ("succeeded", "failed", "cancelled", "expired")
RAN = frozenset({"succeeded", "failed"})
"""Statuses whose `updated_at - answered_at` is a run (a cancel or an expiry ends a job
from outside, whatever its worker was doing)."""
MIN_SPAN_SECONDS = 1.0
"""A sampled span is never counted shorter than this (no rate divides by about zero)."""


def percentiles(values: Iterable[float]) -> JSONObject | None:
    """`{"p50", "p90", "max"}` of `values` (nearest rank: each is a value seen), rounded to
    the millisecond; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None

    def rank(p: float) -> float:
        return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]

    return {"p50": _seconds(rank(0.5)), "p90": _seconds(rank(0.9)), "max": _seconds(ordered[-1])}


def op_figures(
    timings: Sequence[JobTiming], *, now: float, window_seconds: float, limit: int
) -> JSONObject:
    """The figures of the jobs updated within the `window_seconds` before `now` (what
    `recent_timings(op, now - window_seconds, limit)` answered)."""
    complete = len(timings) < limit
    start = now - window_seconds
    if not complete:
        # Newest first: jobs updated after the last one's `updated_at` are all here.
        start = max(start, min(t.updated_at for t in timings))
    span = max(now - start, MIN_SPAN_SECONDS)
    within = [t for t in timings if t.updated_at >= start]
    accepted = sum(1 for t in within if t.created_at >= start)
    finished = [t for t in within if t.status in TERMINAL_STATUSES]
    waits = [
        max(t.answered_at - t.created_at, 0.0)
        for t in within
        if t.answered_at is not None and t.answered_at >= start
    ]
    runs = [
        max(t.updated_at - t.answered_at, 0.0)
        for t in finished
        if t.status in RAN and t.answered_at is not None
    ]
    return {
        "window_seconds": round(span, 3) if not complete else window_seconds,
        "accepted": accepted,
        "finished": len(finished),
        "outcomes": {o: sum(1 for t in finished if t.status == o) for o in OUTCOMES},
        "accepted_per_minute": round(accepted * 60 / span, 3),
        "finished_per_minute": round(len(finished) * 60 / span, 3),
        "queue_wait_seconds": percentiles(waits),
        "run_seconds": percentiles(runs),
        "sampled": len(timings),
        "complete": complete,
    }


def _seconds(value: float) -> float:
    return round(value, 3)
