"""Prometheus metrics, on a registry of the app's own (so several apps can share a process).

deploy/grafana/gateway.json is a dashboard of them: keep the two in step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from gateway.jobs import Event, Job

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Jobs take milliseconds or days: 5 ms to 1 day, about three buckets a decade.
JOB_SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    4 * 3600,
    12 * 3600,
    86400,
)
MAX_RUNNING_REMEMBERED = 100_000


class _Remembered(MetricWrapperBase):
    """`labels(...)` that remembers each child: prometheus-client checks the values and
    looks them up under a lock on every call, a few microseconds each, several times a
    request. (Children are never removed from these metrics, so none goes stale; their
    label values come from small sets: statuses, outcomes, the contracts' operations.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._remembered: dict[tuple[Any, ...], Self] = {}

    def labels(self, *values: Any, **by_name: Any) -> Self:
        if by_name:
            return super().labels(*values, **by_name)
        child = self._remembered.get(values)
        if child is None:
            child = self._remembered[values] = super().labels(*values)
        return child


class RememberedCounter(_Remembered, Counter):
    pass


class RememberedHistogram(_Remembered, Histogram):
    pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_responses = RememberedCounter(
            "gateway_http_responses", "HTTP responses by status code", ["status"], registry=r
        )
        self.jobs_submitted = RememberedCounter(
            "gateway_jobs_submitted", "Jobs accepted (stored and confirmed)", ["op"], registry=r
        )
        self.jobs_finished = RememberedCounter(
            "gateway_jobs_finished",
            "Jobs that reached a terminal status",
            ["op", "status"],
            registry=r,
        )
        self.answers = RememberedCounter(
            "gateway_answers", "Answers consumed from workers, by outcome", ["outcome"], registry=r
        )
        self.topic_messages = RememberedCounter(
            "gateway_topic_messages",
            "Messages read from topic streams, by family and outcome (delivered, invalid: "
            "off its contract, malformed: not JSON, too_large)",
            ["topic", "outcome"],
            registry=r,
        )
        self.topic_published = RememberedCounter(
            "gateway_topic_published",
            "Messages published through the HTTP API (confirmed), by family",
            ["topic"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "gateway_publish_seconds",
            "Time from publish to RabbitMQ's confirm",
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        self.broker_up = Gauge("gateway_broker_up", "1 when connected to RabbitMQ", registry=r)
        self.broker_unusable = Gauge(
            "gateway_broker_unusable",
            "1 when RabbitMQ cannot take requests (down, stalled, blocked, or refusing)",
            registry=r,
        )
        self.waiters = Gauge("gateway_waiters", "Requests waiting for a job event", registry=r)
        self.queue_wait_seconds = RememberedHistogram(
            "gateway_job_queue_wait_seconds",
            "Time from a job's acceptance to its worker's first answer (started, progress, "
            "or the end itself)",
            ["op"],
            registry=r,
            buckets=JOB_SECONDS_BUCKETS,
        )
        self.run_seconds = RememberedHistogram(
            "gateway_job_run_seconds",
            "Time from a job's first answer to its end, for jobs whose worker said started "
            "or sent progress first (seen by the instance that recorded both)",
            ["op"],
            registry=r,
            buckets=JOB_SECONDS_BUCKETS,
        )
        # When each running job's worker first answered: kept in memory (the store need
        # not be read, nor given a column, on the answer path), bounded, dropped at its end.
        self._running_since: OrderedDict[str, float] = OrderedDict()

    def watch(
        self,
        broker_up: Callable[[], bool],
        broker_unusable: Callable[[], bool],
        waiters: Callable[[], int],
    ) -> None:
        """Read live values at scrape time instead of tracking them on the hot path."""
        self.broker_up.set_function(lambda: float(broker_up()))
        self.broker_unusable.set_function(lambda: float(broker_unusable()))
        self.waiters.set_function(lambda: float(waiters()))

    def job_event(self, job: Job, event: Event, *, answered: bool) -> None:
        """A job's event was stored (`job` as it is now): time its queue wait when this is
        its worker's first answer (`answered`: from a worker, not a sweep, dead letter or
        cancel), and its run when it ended after a first answer that did not end it."""
        if answered and event.seq == 2:  # seq 1 is `queued`: this is the first answer
            self.queue_wait_seconds.labels(job.op).observe(max(event.time - job.created_at, 0))
            if not job.terminal:
                self._running_since[job.id] = event.time
                if len(self._running_since) > MAX_RUNNING_REMEMBERED:
                    self._running_since.popitem(last=False)
        elif job.terminal:
            since = self._running_since.pop(job.id, None)
            if since is not None:
                self.run_seconds.labels(job.op).observe(max(event.time - since, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
