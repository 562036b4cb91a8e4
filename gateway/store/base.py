"""The job store interface: jobs and their numbered events.

SQLite (one instance) and PostgreSQL (many instances) implement it, and memory for light
operations. Every method is one transaction; `record` applies `gateway.jobs.apply`
atomically, so the per-job `seq` never repeats and the first terminal event wins even
under redelivery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from gateway.jobs import Event, Job
from gateway.types import JSON, EventType, Status

Overdue = Literal["deadline", "lease", "unconfirmed"]
"""Why a sweep found a job overdue: past its deadline, its worker's lease lapsed, or a
keyed job whose publish RabbitMQ never confirmed, and no retry of the key published."""


@dataclass(frozen=True, slots=True)
class Created:
    job: Job
    created: bool
    """False when the idempotency key already named a job: `job` is that one."""
    request: bytes
    published: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    job: Job
    event: Event | None
    """None when the state machine ignored the event (e.g. after a terminal one)."""


ANSWER_EVENTS = ("started", "progress", "result", "error")
"""The event types that answer a job (`JobTiming.answered_at`): all but `queued`,
`cancelled` and `expired`, which a job may meet while still in its queue."""


@dataclass(frozen=True, slots=True)
class JobTiming:
    """What per-operation figures need of a job (`JobStore.recent_timings`)."""

    status: Status
    created_at: float
    answered_at: float | None
    """When its first answer event came (`ANSWER_EVENTS`: in practice the worker's first
    answer, or the gateway's error for a job no worker took): None if none yet, or if it
    ended without one (cancelled or expired in its queue)."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Which jobs `JobStore.list_jobs` lists, newest first (by `created_at`, ties by
    `id`). Whose must be said: one owner's, or (auth off) everyone's; never by default."""

    owner: str | None = None
    """Only the jobs this subject owns (`Job.owner`)."""
    everyone: bool = False
    """Every owner's jobs, and those of none."""
    op: str | None = None
    status: Status | None = None
    before: tuple[float, str] | None = None
    """Only jobs after this (created_at, id) in the order: where the last page ended."""
    limit: int = 20

    def __post_init__(self) -> None:
        if (self.owner is not None) == self.everyone:
            raise ValueError("a job query names one owner, or everyone, not both or neither")
        if self.limit < 0:
            raise ValueError("a job query's limit cannot be negative")

    def matches(self, job: Job) -> bool:
        """Whether `job` is one this query lists (for stores that filter in Python)."""
        return (
            (self.everyone or job.owner == self.owner)
            and (self.op is None or job.op == self.op)
            and (self.status is None or job.status == self.status)
            and (self.before is None or (job.created_at, job.id) < self.before)
        )


def newest_first(job: Job) -> tuple[float, str]:
    """The sort key of `JobStore.list_jobs` (descending): what a cursor records."""
    return (job.created_at, job.id)


class JobStore(ABC):
    shared: bool = False
    """True when several gateway instances may use this store at once (then they tell
    each other about new events: see gateway/peers.py)."""

    cancel_safe: bool = False
    """True when cancelling a call returns at once (its work runs in a thread, or in
    memory); False when a cancelled call may wait on the store to clean up (a network
    driver), so a bounded caller must leave it behind instead (gateway/store/bounded.py)."""

    unavailable_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)
    """Exceptions that mean the store cannot serve now (down, restarting, locked), as
    opposed to a bug: they answer 503 with Retry-After (see gateway/store/bounded.py)."""

    @abstractmethod
    async def open(self) -> None: ...

    @property
    @abstractmethod
    def identity(self) -> str:
        """A random name this store was given when its tables were made (once open):
        gateways on one RabbitMQ virtual host must all have the same one."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot serve."""

    @abstractmethod
    async def create(self, job: Job, first: Event, request: bytes) -> Created:
        """Store a new job with its first event, unless its idempotency key is taken."""

    @abstractmethod
    async def mark_published(self, job_id: str) -> None:
        """RabbitMQ confirmed the job's request message."""

    @abstractmethod
    async def discard(self, job_id: str) -> None:
        """Forget a job whose request could not be published (its id was never given out)."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def record(
        self, job_id: str, type: EventType, data: JSON, *, lease_until: float | None = None
    ) -> Recorded | None:
        """Apply an event to a job; None if there is no such job. `lease_until`, if given,
        is when the job's worker counts as lost unless it answers again."""

    @abstractmethod
    async def touch(self, job_id: str, lease_until: float) -> bool:
        """Extend a running job's lease (a worker's heartbeat); False if not running."""

    @abstractmethod
    async def overdue(
        self, now: float, limit: int = 500, *, unconfirmed_before: float | None = None
    ) -> list[tuple[str, Overdue]]:
        """Unfinished jobs past their deadline, running jobs past their lease, and (given
        `unconfirmed_before`) keyed jobs created before it and never published."""

    @abstractmethod
    async def purge(self, op: str, finished_before: float, limit: int = 1000) -> int:
        """Delete finished jobs of `op` (and their events) last updated before the time."""

    @abstractmethod
    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        """The job's events with seq > after, in order."""

    @abstractmethod
    async def list_jobs(self, query: JobQuery) -> list[Job]:
        """The jobs `query` asks for, newest first (by created_at, then id, both
        descending), at most `query.limit` of them."""

    @abstractmethod
    async def recent_timings(self, op: str, since: float, limit: int = 1000) -> list[JobTiming]:
        """The jobs of `op` last updated at or after `since` (so every job created since
        then, too), most recently updated first, at most `limit` of them."""
