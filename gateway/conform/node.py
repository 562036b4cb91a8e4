"""A throwaway RabbitMQ node for `gateway conform`: its own temporary data dir, free
ports and Erlang cookie, started for one run and gone after it.

It exists so that proving a worker needs nothing but an installed `rabbitmq-server`: no
broker to set up, and nothing of the user's (a system node, a development node, their
queues) is touched. It sets the node up as deploy/rabbitmq-local.sh does (the test
harness's node): the scripts in /usr/lib/rabbitmq/bin, which run as the caller (Debian's
/usr/sbin wrappers would switch root to the rabbitmq user, who cannot read our dir), AMQP
and distribution on loopback only, an epmd on a private port, ended with the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gateway.conform import SetupError

__all__ = ["ThrowawayNode", "free_port"]

DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on loopback now (the node binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _program(name: str) -> str | None:
    debian = DEBIAN_BIN / name
    return str(debian) if os.access(debian, os.X_OK) else shutil.which(name)


class ThrowawayNode:
    """A RabbitMQ node in a temporary directory, on free loopback ports."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-conform-rabbitmq-"))
        self.port = free_port()
        self.epmd_port = free_port()
        self.name = f"gateway-conform-{os.getpid()}-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._server: asyncio.subprocess.Process | None = None
        self.env = self._environment()

    def _environment(self) -> Mapping[str, str]:
        directory = self.directory
        for folder in ("mnesia", "log"):
            (directory / folder).mkdir()
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )
        return {
            **os.environ,
            "HOME": str(directory),  # the Erlang cookie, shared by server and rabbitmqctl
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "ERL_CRASH_DUMP": str(directory / "log" / "erl_crash.dump"),
        }

    @property
    def _pid_file(self) -> str:
        return str(self.directory / "rabbitmq.pid")

    async def _ctl(self, *args: str, timeout: float) -> int:
        ctl = _program("rabbitmqctl")
        assert ctl is not None  # start() found the server beside it
        process = await asyncio.create_subprocess_exec(
            ctl,
            "-q",
            *args,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout):
                return await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            return -1

    async def start(self) -> None:
        """Start the node and return once it serves AMQP; `SetupError` if it does not."""
        server = _program("rabbitmq-server")
        if server is None or _program("rabbitmqctl") is None:
            raise SetupError(
                "no RabbitMQ server installed (rabbitmq-server): install it, or give --broker-url"
            )
        log = (self.directory / "log" / "console.log").open("wb")
        with log:
            self._server = await asyncio.create_subprocess_exec(
                server, env=dict(self.env), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        # `wait` returns when the node serves (or fails when its VM has gone): an event,
        # not a poll of ours.
        if (
            await self._ctl(
                "wait",
                "--timeout",
                str(int(START_TIMEOUT)),
                self._pid_file,
                timeout=START_TIMEOUT + 10,
            )
            != 0
        ):
            tail = self._log_tail()
            await self.stop()
            raise SetupError(f"the throwaway RabbitMQ node did not start{tail}")

    def _log_tail(self) -> str:
        try:
            lines = (self.directory / "log" / "console.log").read_text(errors="replace")
        except OSError:
            return ""
        last = [line for line in lines.splitlines() if line.strip()][-1:]
        return f": {last[0].strip()}" if last else ""

    async def stop(self) -> None:
        """Stop the node and its epmd, and remove its directory."""
        try:
            if self._server is not None and self._server.returncode is None:
                # `stop PID_FILE` returns once the VM has exited.
                await self._ctl("stop", self._pid_file, timeout=STOP_TIMEOUT)
                if self._server.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self._server.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await self._server.wait()
            await self._stop_epmd()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _stop_epmd(self) -> None:
        """epmd outlives the VMs that started it: end the one on our private port (and so
        never another node's). It refuses while a node is still registered with it, which
        the one just stopped may be for a moment: try a few times."""
        epmd = shutil.which("epmd")
        if epmd is None:
            return
        for _ in range(10):
            names = await asyncio.create_subprocess_exec(
                epmd,
                "-port",
                str(self.epmd_port),
                "-names",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await names.wait() != 0:
                return  # none there
            kill = await asyncio.create_subprocess_exec(
                epmd,
                "-port",
                str(self.epmd_port),
                "-kill",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await kill.wait()
            await asyncio.sleep(0.2)  # epmd has no event for "the node unregistered"
