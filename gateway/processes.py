"""`gateway serve --workers N`: every core of the machine, on one port.

One supervisor (uvicorn's: it restarts a child that dies or hangs, and stops them all on
SIGTERM or SIGINT, each draining its requests) binds the port; N gateway processes accept
on it. They share the store (one SQLite file in WAL mode, or PostgreSQL), wake each
other's waiters through RabbitMQ as separate instances do, and answer for each other's
light jobs through private UNIX sockets (gateway/siblings.py).

What the supervisor gives every child alike: the settings, a private directory for those
sockets, and a job token secret (a token one process signed must open the job in all).
The waiter caps are for the whole `gateway serve`: each process takes its share.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from limits import parse
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from gateway.config import Settings
from gateway.server import uvicorn_config

# Their debug output dumps AMQP frames, request and answer bodies among them: never below
# info, whatever the gateway's own level (SECURITY.md, logs).
QUIET_LIBRARIES = ("aiormq", "aio_pika", "asyncpg")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(max(logging.INFO, logging.getLogger().level))


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the box's)."""
    return len(os.sched_getaffinity(0)) or os.cpu_count() or 1


def share(total: int, workers: int) -> int:
    return max(1, math.ceil(total / workers))


def child_settings(settings: Settings, workers: int, siblings_dir: Path) -> Settings:
    """What each of `workers` processes runs with: its share of the machine-wide caps."""
    auth = settings.auth
    if auth.enabled and auth.job_token_secret is None:
        # Random, as for one process, but one for all: any process opens any job's token.
        auth = dataclasses.replace(auth, job_token_secret=secrets.token_urlsafe(32))
    per_client = settings.max_waiters_per_client
    rate = parse(settings.rate_limit) if settings.rate_limit else None
    return dataclasses.replace(
        settings,
        workers=workers,
        siblings_dir=siblings_dir,
        auth=auth,
        max_waiters=share(settings.max_waiters, workers),
        max_waiters_per_client=share(per_client, workers) if per_client else per_client,
        rate_limit=(
            f"{share(rate.amount, workers)}/{rate.multiples} {rate.GRANULARITY.name}"
            if rate is not None
            else None
        ),
        # One store, several processes: each tells the others about new events.
        notify_peers=True if settings.notify_peers is None else settings.notify_peers,
    )


def child_app(settings: Settings, log_level: str) -> Starlette:
    """The app factory a child process calls (uvicorn's `factory=True`)."""
    from gateway.app import create_app

    configure_logging(log_level)
    return create_app(settings)


def serve_processes(settings: Settings, workers: int, log_level: str, **options: Any) -> int:
    """Run `workers` gateway processes until SIGTERM or SIGINT; the exit status. Raises
    what `create_app` raises for broken contracts or settings, before any child starts."""
    from gateway.app import create_app

    siblings_dir = Path(tempfile.mkdtemp(prefix="gateway-siblings-"))  # 0700
    try:
        settings = child_settings(settings, workers, siblings_dir)
        create_app(settings)  # refuse broken contracts here, once, not in N children
        config = uvicorn_config(
            functools.partial(child_app, settings, log_level),
            settings,
            factory=True,
            workers=workers,
            log_level=log_level,
            **options,
        )
        try:
            sock = config.bind_socket()
        except SystemExit:
            return 3  # could not listen (the address in use, say): uvicorn said why
        Multiprocess(config, sockets=[sock]).run()
        return 0
    finally:
        shutil.rmtree(siblings_dir, ignore_errors=True)
