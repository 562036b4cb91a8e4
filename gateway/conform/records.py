"""What a conform run saw, job by job, and a way to await the next thing it sees.

It exists so that driving the worker (`scenarios`) and judging it (`cases`) share one
account of the facts: the requests sent, the answers received, the deliveries and
settlements the tap saw, and the dead letters, each stamped with a monotonic time.
Scenarios wait on it (`until`) as answers arrive; cases only read it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.conform.tap import Answered, Delivered, Settled, TapEvent
from gateway.wire import AnswerType, answer_type

__all__ = ["FINAL_TYPES", "Job", "Received", "Record", "Roles"]

FINAL_TYPES = frozenset({AnswerType.RESULT, AnswerType.ERROR})


@dataclass(frozen=True, slots=True)
class Received:
    """An answer that reached conform's reply queue."""

    at: float
    correlation_id: str | None
    type: str
    """The answer type: the AMQP `type` property, absent or empty meaning `result`."""
    body: bytes

    @property
    def final(self) -> bool:
        return self.type in FINAL_TYPES


@dataclass
class Job:
    """One job id conform published (in one or more copies), and all seen about it."""

    id: str
    label: str
    sent: list[float] = field(default_factory=list)
    answers: list[Received] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    settled: list[Settled] = field(default_factory=list)
    published: list[Answered] = field(default_factory=list)
    dead_letters: list[float] = field(default_factory=list)

    def finals(self, after: float = 0.0) -> list[Received]:
        return [a for a in self.answers if a.final and a.at >= after]

    def final(self, after: float = 0.0) -> Received | None:
        """The first final answer (the one the gateway keeps) received at or after `after`."""
        return next(iter(self.finals(after)), None)

    def acked(self) -> Settled | None:
        return next((s for s in self.settled if s.how == "ack"), None)


@dataclass
class Roles:
    """Which job played which part, and when the scenarios did what: filled in by
    `scenarios`, read by `cases`."""

    answers: list[str] = field(default_factory=list)
    redelivered: str | None = None
    copied: str | None = None
    copy_sent_at: float | None = None
    after_copies: str | None = None
    error: str | None = None
    slow: str | None = None
    cancelled: str | None = None
    cancel_sent_at: float | None = None
    after_cancel: str | None = None
    off_contract: str | None = None
    not_json: str | None = None
    after_reject: str | None = None
    expired: str | None = None
    after_expired: str | None = None


class Record:
    """Everything seen during a run. Every change wakes the waiters of `until`."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.answers: list[Received] = []
        """Every answer received, in order (those of unknown jobs too)."""
        self.strays: list[Received] = []
        """Answers whose correlation_id no request carried."""
        self.worker_exit: int | None = None
        self.queue_left: int | None = None
        """Requests still ready in the operation's queue when the cases were done."""
        self._changed = asyncio.Event()

    def job(self, job_id: str, label: str) -> Job:
        job = self.jobs.setdefault(job_id, Job(job_id, label))
        return job

    def label(self, job_id: str | None) -> str:
        job = self.jobs.get(job_id or "")
        return f"{job.label} (job {job.id})" if job else f"job {job_id}"

    def _touch(self) -> None:
        # Wake everyone waiting now; later waiters wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def sent(self, job_id: str, label: str) -> float:
        now = time.monotonic()
        self.job(job_id, label).sent.append(now)
        return now

    def answer(self, correlation_id: str | None, raw_type: str | None, body: bytes) -> None:
        received = Received(time.monotonic(), correlation_id, answer_type(raw_type), body)
        self.answers.append(received)
        job = self.jobs.get(correlation_id or "")
        if job is None:
            self.strays.append(received)
        else:
            job.answers.append(received)
        self._touch()

    def dead_letter(self, correlation_id: str | None) -> None:
        job = self.jobs.get(correlation_id or "")
        if job is not None:
            job.dead_letters.append(time.monotonic())
            self._touch()

    def tap_event(self, event: TapEvent) -> None:
        job = self.jobs.get(event.correlation_id or "")
        if job is None:
            return
        if isinstance(event, Delivered):
            job.delivered.append(event)
        elif isinstance(event, Settled):
            job.settled.append(event)
        else:
            job.published.append(event)
        self._touch()

    def worker_exited(self, status: int) -> None:
        self.worker_exit = status
        self._touch()

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()` (checked on every change) or `timeout` seconds; whether it
        is done. Gives up early if the worker has exited: nothing more will come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.worker_exit is not None:
                return False
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return done()
        return True

    async def quiet(self, seconds: float) -> None:
        """Let `seconds` pass, watching (a case that checks for silence)."""
        await self.until(lambda: False, seconds)
