"""Test harness: a private PostgreSQL server (Debian's `postgresql` package), on a free
port with a data directory of its own, like `RabbitNode` for RabbitMQ. The system's own
cluster (/etc/postgresql, port 5432) is never used or touched.

PostgreSQL refuses to run as root, and the tests run as root: then every server program
runs as the `postgres` system user (runuser), in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from tests.support import free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")
DATABASE = "gateway_test"


def postgres_bin() -> Path:
    """The newest installed server's bin directory."""
    versions = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin/postgres")),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed: run deploy/install-system-deps.sh postgresql"
        )
    return versions[-1].parent


class PostgresServer:
    """A PostgreSQL server of the tests' own; `url` names its test database."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        # Not under pytest's tmp dirs: those are private to root, and the server user
        # must reach its data directory.
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-postgres-"))
        self.data = self.directory / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{DATABASE}"
        self._paused: list[int] = []

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / program), *args],
            check=True,
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        # Trust on the private unix socket (for createdb), a password over TCP (as in
        # production: the gateway's URL carries one, and must never show it).
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        self.start_server()
        self._run(
            "createdb", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres", DATABASE
        )

    def start_server(self) -> None:
        """Start the server on its data directory (again, after a stop or a kill)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_server(self) -> None:
        """A fast shutdown: clients are disconnected, the data directory stays."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop_server()
        self.start_server()

    def processes(self) -> list[int]:
        """The postmaster and its children (read from /proc: no procps needed)."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == main:
                children.append(int(stat.parent.name))
        return [main, *children]

    def pause(self) -> None:
        """SIGSTOP every server process: connections stay open, nothing is answered."""
        self._paused = self.processes()
        for pid in self._paused:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._paused:
            os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL every server process (a crash; start_server recovers)."""
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)
        # Here nobody may reap them: a zombie keeps its PID, which the next postmaster
        # would take for a live one. Every server process is dead: the lock files are stale.
        (self.data / "postmaster.pid").unlink()
        (self.directory / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


async def fresh_database(url: str) -> str:
    """A new, empty database on the server of `url` (whose user may create one); its URL."""
    name = "t_" + secrets.token_hex(6)
    db = await asyncpg.connect(url)
    try:
        await db.execute(f'CREATE DATABASE "{name}"')
    finally:
        await db.close()
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))
