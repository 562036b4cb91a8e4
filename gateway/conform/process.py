"""The worker under test: its command, started with `GATEWAY_BROKER_URL`, its output kept
for the report, and its end.

It exists to keep process handling (sessions, signals, output) out of the cases. The
command runs in a session of its own, so that stopping it stops what it started too (a
shell script's children, `npm start`'s node).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence

from gateway.conform import SetupError

__all__ = ["WorkerProcess"]

KEPT_LINES = 200
STOP_GRACE = 5.0


class WorkerProcess:
    def __init__(
        self, command: Sequence[str], broker_url: str, on_exit: Callable[[int], None]
    ) -> None:
        self.command = list(command)
        self.broker_url = broker_url
        self.on_exit = on_exit
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        """Its latest output lines (stdout and stderr together)."""
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    async def start(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command,
                env={**os.environ, "GATEWAY_BROKER_URL": self.broker_url},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise SetupError(f"cannot start the worker {self.command[0]}: {exc}") from exc
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        while line := await process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
        self.on_exit(await process.wait())

    def last_line(self) -> str:
        return next((line for line in reversed(self.lines) if line.strip()), "(no output)")

    async def stop(self) -> None:
        """SIGTERM to its session, then SIGKILL if it lingers."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await process.wait()
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await process.wait()
        # Whatever it started and left behind holds the output pipe: end those too.
        self._signal(signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await self._reader

    def _signal(self, sig: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)
