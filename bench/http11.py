"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load clients.

Why not httpx: at thousands of requests a second its per-request cost would make the
load generator, not the server, the bottleneck on a 2-core machine. This speaks just
what the benchmark needs: Content-Length and chunked bodies, and reading a chunked
event stream until a marker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

# Linux: pick the source port at connect(), not bind(), so it need only be unique per
# (source, destination) pair: one source address then gives a full ephemeral range
# for each destination. (Not in Python's socket module by name.)
IP_BIND_ADDRESS_NO_PORT = 24


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive connection to host:port; reconnects when the server closed it.
    `source`: the local address to connect from (127.0.0.2, ...), so one machine can
    hold more connections to one server port than a single address's ephemeral ports."""

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.local_port = 0  # of the latest socket: which server process holds it, say
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if (
            self._reader is None
            or self._writer is None
            or self._writer.is_closing()
            or self._reader.at_eof()  # the server closed it (uvicorn: idle keep-alive)
        ):
            if self.source is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            else:
                self._reader, self._writer = await asyncio.open_connection(
                    sock=await self._connect_from(self.source)
                )
            self.local_port = self._writer.get_extra_info("sockname")[1]
        return self._reader, self._writer

    async def _connect_from(self, source: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.StreamReader:
        """Write one request; the reader to take its response from."""
        reader, writer = await self._open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        await writer.drain()
        return reader

    async def read_head(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {status_line!r}") from None
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        try:
            reader = await self.send(method, path, body, headers)
            status, response_headers = await self.read_head(reader)
            if "content-length" in response_headers:
                data = await reader.readexactly(int(response_headers["content-length"]))
            elif response_headers.get("transfer-encoding") == "chunked":
                data = b"".join([chunk async for chunk in _chunks(reader)])
            else:
                data = await reader.read()
                self.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, response_headers, data)

    async def stream_until(
        self,
        path: str,
        marker: bytes,
        headers: dict[str, str] | None = None,
        *,
        on_open: asyncio.Event | None = None,
        drain: bool = True,
    ) -> int:
        """GET an event stream and read it until `marker` appears; then read it to its
        end (keeping the connection for reuse) if `drain`, else close. The status."""
        try:
            reader = await self.send("GET", path, None, headers)
            status, response_headers = await self.read_head(reader)
            if on_open is not None:
                on_open.set()
            if status != 200 or response_headers.get("transfer-encoding") != "chunked":
                self.close()
                return status
            seen = b""
            async for chunk in _chunks(reader):
                # Keep a tail so a marker split across chunks is still found.
                seen = seen[-len(marker) :] + chunk
                if marker in seen:
                    break
            else:
                raise HttpError(f"stream ended without {marker!r}")
            if drain:
                async for _ in _chunks(reader):
                    pass
            else:
                self.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise
        return status


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The chunks of a chunked body, up to and including its terminating chunk."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent: the final CRLF
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]
