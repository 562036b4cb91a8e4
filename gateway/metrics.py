"""Prometheus metrics, on a registry of the app's own (so several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_responses = Counter(
            "gateway_http_responses", "HTTP responses by status code", ["status"], registry=r
        )
        self.jobs_submitted = Counter(
            "gateway_jobs_submitted", "Jobs accepted (stored and confirmed)", ["op"], registry=r
        )
        self.jobs_finished = Counter(
            "gateway_jobs_finished",
            "Jobs that reached a terminal status",
            ["op", "status"],
            registry=r,
        )
        self.answers = Counter(
            "gateway_answers", "Answers consumed from workers, by outcome", ["outcome"], registry=r
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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
