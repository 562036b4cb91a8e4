"""The application factory: routes, error handlers, and the lifespan that opens the
store and connects to RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.console import Console
from gateway.contracts import ContractRegistry
from gateway.http import jobs, me, op_stats, ops, system, topics
from gateway.http.responses import EXCEPTION_HANDLERS
from gateway.limits import ClientLimits
from gateway.metrics import Metrics
from gateway.op_stats import OpStats
from gateway.service import GatewayService
from gateway.siblings import ForwardToOwner, Siblings, forwarding_config
from gateway.store import JobStore, open_store
from gateway.store.bounded import BoundedStore
from gateway.store.memory import MemoryStore
from gateway.store.routing import DurabilityRouter
from gateway.telemetry import Telemetry
from gateway.wire import HEADER_TRACEPARENT, HEADER_TRACESTATE

SIBLING_BROKER_WAIT_SECONDS = 10.0

CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    "Last-Event-ID",
    "Prefer",
    "X-Deadline-Seconds",
]


class CountResponses:
    """Counts responses by status for /metrics (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.http_responses.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> Starlette:
    """A gateway app. Contracts are loaded (and a broken one refused) right here.
    `telemetry`: where its spans go; by default as the OTEL_* variables say (off)."""
    settings = settings or Settings()
    contracts = ContractRegistry.from_directory(settings.contracts_dir)
    store: JobStore = BoundedStore(
        open_store(settings.store_url),
        timeout=settings.store_timeout_seconds,
        stall_after=settings.stall_seconds,
    )
    light_ops = {c.op for c in contracts.values() if c.settings.durability == "light"}
    if light_ops:
        store = DurabilityRouter(store, MemoryStore(), light_ops)
    service = GatewayService(settings, contracts, store)
    service.telemetry = telemetry or Telemetry.from_environment()
    siblings = (
        Siblings(settings.siblings_dir, settings.workers)
        if settings.siblings_dir is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if siblings is not None:
            await siblings.start(app, forwarding_config(app, settings))
            service.slot = siblings.slot
        await service.start()
        if siblings is not None:
            # A process (re)starting beside others that serve takes no connections (they
            # go to those others) until it can publish, or gives up waiting and serves
            # 503s as a lone gateway would with RabbitMQ down.
            await service.broker.wait_ready(SIBLING_BROKER_WAIT_SECONDS)
        try:
            yield
        finally:
            if siblings is not None:
                await siblings.stop()
            await service.stop()
            if telemetry is None:  # its own; a given one is its giver's to shut down
                service.telemetry.shutdown()

    pages: list[BaseRoute] = [
        Mount(prefix.rstrip("/"), app=StaticFiles(directory=folder, html=True))
        for prefix, folder in settings.static
    ]
    if settings.console:
        pages = [*Console().routes, *pages]
    app = Starlette(
        routes=[
            *ops.routes,
            *op_stats.routes,
            *jobs.routes,
            *topics.routes,
            *me.routes,
            *system.routes,
            *pages,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.service = service
    # One per process: its cache is what many open consoles share.
    app.state.op_stats = OpStats(service.broker, service.store, timeout=settings.stall_seconds)
    app.state.authenticator = Authenticator(settings.auth)
    app.state.limits = ClientLimits(
        settings.rate_limit, settings.max_waiters_per_client, settings.max_waiters
    )
    if siblings is not None:
        # Inside CORS: the receiving process answers CORS, its sibling the request.
        app.add_middleware(ForwardToOwner, siblings=siblings, light_ops=frozenset(light_ops))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=["Location", "Retry-After", "Preference-Applied"],
            max_age=600,
        )
    app.add_middleware(CountResponses, metrics=service.metrics)
    return app
