"""A gateway for the client suites (Python, JavaScript, Perl): the example contracts under
their plain names, on a virtual host of their own, with the example workers running as
real processes. The JS and Perl suites get its coordinates through the environment:

    GATEWAY_URL          http://127.0.0.1:PORT  (the gateway)
    GATEWAY_BROKER_URL   amqp://.../VHOST       (for workers, e.g. the Perl and JS ones)
    GATEWAY_SCHEMAS      the repository's schemas/ folder (contracts and vectors)
    GATEWAY_PAGE_ORIGIN  http://127.0.0.1:PORT  (an origin the gateway allows by CORS,
                                                 for a browser test to serve its page on)
    GATEWAY_AUTH_URL     a second gateway, with auth on (no workers: its jobs stay queued
                         until cancelled), for the clients' job token tests
    GATEWAY_AUTH_TOKEN   an API key of that gateway with every scope
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from gateway.auth import AuthSettings
from gateway.config import Settings
from tests.support import ROOT, RabbitNode, RunningGateway, free_port, serve_gateway

PYTHON_WORKERS = ["math_add.py", "report_generate.py", "echo.py"]
PERL_WORKER = ROOT / "examples" / "perl" / "text_upper.pl"
JS_WORKER = ROOT / "examples" / "workers" / "text_stats.mjs"
LOGS = ROOT / "var" / "test-logs"


@dataclass
class Polyglot:
    gateway: RunningGateway
    broker_url: str
    page_origin: str
    auth_gateway: RunningGateway
    auth_token: str

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GATEWAY_URL": self.gateway.url,
            "GATEWAY_BROKER_URL": self.broker_url,
            "GATEWAY_SCHEMAS": str(ROOT / "schemas"),
            "GATEWAY_PAGE_ORIGIN": self.page_origin,
            "GATEWAY_AUTH_URL": self.auth_gateway.url,
            "GATEWAY_AUTH_TOKEN": self.auth_token,
            "PERL5LIB": os.pathsep.join(
                filter(None, [str(ROOT / "clients/perl/lib"), os.environ.get("PERL5LIB")])
            ),
        }


async def start_worker(command: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start a worker process and wait for its "serving" line."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(60):
        while True:
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"{command} exited: {b''.join(seen).decode()}")
            seen.append(line)
            if b"serving" in line:
                break
    # Keep draining its output (to a log, for a post-mortem) so the pipe never fills.
    log = LOGS / f"{Path(command[-1]).stem}-{process.pid}.log"
    _drainers.add(asyncio.create_task(_drain(process.stdout, log)))
    return process


_drainers: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader, log: Path) -> None:
    # Chunks, not lines: a line longer than the reader's limit must not stop the draining.
    LOGS.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        while chunk := await stream.read(65536):
            sink.write(chunk)
            sink.flush()


@asynccontextmanager
async def polyglot_gateway(rabbit: RabbitNode, tmp: Path) -> AsyncIterator[Polyglot]:
    broker_url = rabbit.add_vhost("clients-" + secrets.token_hex(3))
    page_origin = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        broker_url=broker_url,
        contracts_dir=ROOT / "schemas" / "ops",
        topics_dir=ROOT / "schemas" / "topics",
        store_url=f"sqlite:///{tmp / 'store.sqlite3'}",
        cors_origins=(page_origin,),
        sse_ping_seconds=1.0,
    )
    ops = {
        name: name for name in ("math.add", "report.generate", "echo", "text.upper", "text.stats")
    }
    async with AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(serve_gateway(settings, ops))
        auth_token = secrets.token_urlsafe(16)
        keys = tmp / "keys.json"
        keys.write_bytes(
            orjson.dumps(
                {
                    "keys": [
                        {
                            "key": auth_token,
                            "subject": "suite",
                            "scopes": ["ops:*", "topics:publish:*", "topics:subscribe:*"],
                        }
                    ]
                }
            )
        )
        auth_settings = replace(
            settings,
            broker_url=rabbit.add_vhost("clients-auth-" + secrets.token_hex(3)),
            store_url=f"sqlite:///{tmp / 'auth-store.sqlite3'}",
            auth=AuthSettings(api_keys_file=keys),
        )
        auth_gateway = await stack.enter_async_context(serve_gateway(auth_settings, ops))
        polyglot = Polyglot(gateway, broker_url, page_origin, auth_gateway, auth_token)
        processes = []
        for script in PYTHON_WORKERS:
            processes.append(
                await start_worker(
                    [sys.executable, str(ROOT / "examples/workers" / script)], polyglot.env()
                )
            )
        if PERL_WORKER.exists():
            processes.append(await start_worker(["perl", str(PERL_WORKER)], polyglot.env()))
        if shutil.which("node"):
            processes.append(await start_worker(["node", str(JS_WORKER)], polyglot.env()))
        try:
            yield polyglot
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()
