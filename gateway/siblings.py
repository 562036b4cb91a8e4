"""The processes of one `gateway serve --workers N` answer for each other's light jobs.

A light job lives in the memory of the process that accepted it, and its worker answers
to that process's own reply queue: no other process can read it. So every process holds
a *slot* (0 .. N-1, claimed with a lock file that the kernel frees when the process dies,
so a restarted process takes its predecessor's slot), a light job's id ends in `.<slot>`,
and each process also listens on a private UNIX socket named by its slot. A request for
another slot's light job is forwarded there and its response (a long-poll, an SSE stream)
streamed back: any process answers for any job, and a request that lands on the owner
costs nothing more. A light submit with an `Idempotency-Key` goes to the slot the key
hashes to, so one key names one job whichever process a retry lands on.

Durable jobs need none of this: they are in the shared store, and the processes wake each
other's waiters through RabbitMQ (`gateway.peers`), as separate instances do.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.config import Settings
from gateway.errors import NotFound, ServiceUnavailable
from gateway.http.responses import error_response
from gateway.server import uvicorn_config

log = logging.getLogger("gateway.siblings")

JOBS_PREFIX = "/v1/jobs/"
OPS_PREFIX = "/v1/ops/"
LIGHT_ID = re.compile(r"\.(\d{1,4})$")  # the slot at the end of a light job's id
# Not forwarded either way: they describe one connection, not the request (RFC 9110
# 7.6.1), or are set by whoever sends the response (uvicorn adds its own date, server).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"date",
        b"server",
        # CORS is the receiving process's to answer, once; the client's address is given
        # afresh below (the sibling socket trusts it, and nothing else does).
        b"origin",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"forwarded",
    }
)


def slot_of(job_id: str) -> int | None:
    """The slot whose memory holds this light job; None for any other id."""
    match = LIGHT_ID.search(job_id)
    return int(match.group(1)) if match else None


def slot_for_key(key: str, workers: int) -> int:
    """The slot that takes a light submit with this Idempotency-Key (from any owner: two
    owners' same key are still two jobs there)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % workers


class Siblings:
    """This process's place among the `workers` processes sharing `directory` (private to
    the supervisor: made 0700 by it, removed when it stops)."""

    def __init__(self, directory: Path, workers: int) -> None:
        self.directory = directory
        self.workers = workers
        self.slot: int | None = None
        self._lock: IO[bytes] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._state: ServerState | None = None
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _socket_path(self, slot: int) -> Path:
        return self.directory / f"{slot}.sock"

    def claim_slot(self) -> int:
        """The lowest free slot, held for this process's life. A slot beyond N-1 is taken
        only while a dead process's successor starts before the kernel freed its lock."""
        for slot in range(self.workers * 2):
            lock = (self.directory / f"{slot}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock, self.slot = lock, slot
            return slot
        raise RuntimeError(f"no free slot among {self.workers * 2} in {self.directory}")

    async def start(self, app: ASGIApp, config: uvicorn.Config) -> None:
        """Claim a slot and listen on its socket, serving `app` as the TCP port does.
        `config` is a loaded uvicorn configuration for the socket: its protocol, its
        limits, and its trust in the sibling's `X-Forwarded-For`."""
        slot = self.claim_slot()
        path = self._socket_path(slot)
        path.unlink(missing_ok=True)  # a dead predecessor's: the slot's lock is ours now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o600)
        self._state = state = ServerState()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(protocol, sock=sock, backlog=2048)
        log.info("process %d holds slot %d", os.getpid(), slot)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening; let the requests siblings forwarded here finish, as uvicorn
        lets its own (idle connections close now, busy ones after their response), for
        up to `grace` seconds; then close what is left."""
        if self._server is not None:
            self._server.close()
        if self._state is not None:
            for connection in list(self._state.connections):
                connection.shutdown()
            if self._state.tasks:
                await asyncio.wait(set(self._state.tasks), timeout=grace)
            for connection in list(self._state.connections):
                connection.transport.close()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        if self.slot is not None:
            self._socket_path(self.slot).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # frees the slot

    def _client(self, slot: int) -> httpx.AsyncClient:
        client = self._clients.get(slot)
        if client is None:
            client = self._clients[slot] = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self._socket_path(slot))),
                base_url="http://sibling",
                # A long-poll or a stream may last as long as it likes; the sibling
                # bounds it as it bounds any request. Every forwarded waiter holds one
                # connection, so no pool limit short of the waiter caps.
                timeout=httpx.Timeout(connect=2.0, read=None, write=30.0, pool=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return client

    async def forward(self, slot: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the request to `slot`'s process and stream its response back. Raises
        `OSError` (as httpx.ConnectError) if that process is not there."""
        headers = [
            (name, value) for name, value in scope["headers"] if name.lower() not in HOP_BY_HOP
        ]
        client_addr = scope.get("client")
        if client_addr:
            headers.append((b"x-forwarded-for", str(client_addr[0]).encode("latin-1")))
        body_done = anyio.Event()
        has_body = scope["method"] == "POST"

        async def body() -> AsyncIterator[bytes]:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise anyio.get_cancelled_exc_class()
                yield message.get("body", b"")
                more = message.get("more_body", False)
            body_done.set()

        if not has_body:
            body_done.set()
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        request = self._client(slot).build_request(
            scope["method"], target, headers=headers, content=body() if has_body else None
        )
        response = await self._client(slot).send(request, stream=True)
        try:
            async with anyio.create_task_group() as group:

                async def until_disconnect() -> None:
                    await body_done.wait()
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()  # the client left: so does the sibling

                group.start_soon(until_disconnect)
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [
                            (name, value)
                            for name, value in response.headers.raw
                            if name.lower() not in HOP_BY_HOP
                        ],
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            await response.aclose()


class ForwardToOwner:
    """Pure ASGI: a light job's requests go to the process that holds it; a keyed light
    submit to the process its key hashes to. Everything else passes straight through."""

    def __init__(self, app: ASGIApp, siblings: Siblings, light_ops: frozenset[str]) -> None:
        self.app = app
        self.siblings = siblings
        self.light_ops = light_ops

    def _owner(self, scope: Scope) -> tuple[int | None, bool]:
        """The slot to forward to (None: this one), and whether the job is known to be
        gone if that slot does not answer (else it is only unavailable for now)."""
        path: str = scope["path"]
        if path.startswith(JOBS_PREFIX):
            job_id = path[len(JOBS_PREFIX) :].partition("/")[0]
            return slot_of(job_id), True
        if scope["method"] == "POST" and path.startswith(OPS_PREFIX):
            op = path[len(OPS_PREFIX) :]
            if op in self.light_ops:
                for name, value in scope["headers"]:
                    if name == b"idempotency-key":
                        key = value.decode("latin-1")
                        return slot_for_key(key, self.siblings.workers), False
        return None, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.siblings.slot is None:
            await self.app(scope, receive, send)
            return
        slot, gone_if_absent = self._owner(scope)
        if slot is None or slot == self.siblings.slot:
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.siblings.forward(slot, scope, receive, sending)
        except (httpx.TransportError, OSError) as exc:
            # Its process died (its memory, and the light job, with it) or is restarting.
            log.info("slot %d did not answer: %s", slot, exc)
            if started:
                return  # mid-response: the client sees the stream end, and may resume
            error = (
                NotFound("no job with that id", code="job_not_found")
                if gone_if_absent
                else ServiceUnavailable(
                    "the gateway process for this Idempotency-Key is restarting; retry shortly",
                    code="process_unavailable",
                    retry_after=1,
                )
            )
            await error_response(error)(scope, receive, send)


def forwarding_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for the sibling socket: the gateway's own protocol and
    limits, and the forwarded client address trusted (only siblings reach the socket)."""
    config = uvicorn_config(
        app,
        settings,
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips="*",
        access_log=False,
        log_config=None,
    )
    config.load()
    return config
