"""The Celery peer's app: one echo task on the same RabbitMQ node, results in a
filesystem backend that Flower (another process) can read.

Configured by the environment, as `celery -A bench.celery_app worker|flower` needs:
BENCH_CELERY_BROKER (AMQP URL) and BENCH_CELERY_RESULTS (a directory)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672/"),
    backend="file://" + os.environ.get("BENCH_CELERY_RESULTS", "/tmp/bench-celery-results"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.echo")
def echo(body: Any) -> Any:
    return body
