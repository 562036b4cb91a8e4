"""A private nginx running deploy/nginx/gateway.conf, for tests: its own prefix folder,
temp paths and pid file, a free port, and the config's upstream pointed at a test
gateway. The system's nginx (/etc/nginx, port 80) is never touched."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT, free_port

GATEWAY_CONF = ROOT / "deploy" / "nginx" / "gateway.conf"
INSTALL_HINT = "nginx is not installed: deploy/install-system-deps.sh nginx (as root)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def private_logs(text: str, prefix: Path) -> str:
    """The site with its access_log files moved into `prefix` (not /var/log/nginx)."""
    return re.sub(r"^(\s*access_log\s+)/\S+/([^/\s;]+)", rf"\g<1>{prefix}/\2", text, flags=re.M)


def render_site(upstreams: list[str], listen: str, source: Path = GATEWAY_CONF) -> str:
    """deploy/nginx/gateway.conf with its upstream servers replaced by `upstreams`
    (host:port) and its listen lines by one `listen` (host:port); everything else as is."""
    text = source.read_text()
    block = re.search(r"upstream\s+gateway\s*\{.*?\n\}", text, re.S)
    assert block, "no `upstream gateway { ... }` block in gateway.conf"
    servers = re.compile(r"^(\s*)server\s+\S+([^;\n]*);", re.M)
    found = servers.search(block.group())
    assert found, "no server line in the upstream block"
    indent, options = found.group(1), found.group(2)
    lines = "".join(f"{indent}server {u}{options};\n" for u in upstreams).rstrip("\n")
    upstream = servers.sub("", block.group(), count=0)
    upstream = upstream[: found.start()] + lines + upstream[found.start() :]
    text = text[: block.start()] + upstream + text[block.end() :]
    listens = re.compile(r"^(\s*)listen\s+[^;\n]+;\n", re.M)
    first = listens.search(text)
    assert first, "no listen line in gateway.conf"
    text = listens.sub("", text)
    return text[: first.start()] + f"{first.group(1)}listen {listen};\n" + text[first.start() :]


def main_conf(prefix: Path, site: Path) -> str:
    """A whole nginx.conf around the site: private temp paths, no system files."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's
    # private temp folders; they stay root instead (tests only).
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    types {{ application/json json; text/html html; }}
    default_type application/octet-stream;
    access_log off;
{temp}
    include {site};
}}
"""


def write_conf(prefix: Path, site_text: str) -> Path:
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    site = prefix / "gateway.conf"
    site.write_text(private_logs(site_text, prefix))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, site))
    return conf


def nginx_command(binary: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    pid = prefix / "nginx.pid"
    return [
        binary,
        "-e",
        "stderr",  # not the compiled-in /var/log/nginx/error.log
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-g",
        f"daemon off; pid {pid}; error_log stderr;",
        *extra,
    ]


def check_conf(binary: str, prefix: Path, site_text: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the site: the result (returncode, and nginx's verdict on stderr)."""
    conf = write_conf(prefix, site_text)
    return subprocess.run(
        nginx_command(binary, prefix, conf, "-t"), capture_output=True, text=True, timeout=30
    )


@dataclass
class RunningNginx:
    url: str
    process: asyncio.subprocess.Process
    log: Path
    """nginx's error log (its stderr)."""


@asynccontextmanager
async def run_nginx(binary: str, prefix: Path, upstreams: list[str]) -> AsyncIterator[RunningNginx]:
    """nginx serving deploy/nginx/gateway.conf on a free port in front of `upstreams`."""
    port = free_port()
    conf = write_conf(prefix, render_site(upstreams, f"127.0.0.1:{port}"))
    log = prefix / "nginx.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *nginx_command(binary, prefix, conf), stdout=sink, stderr=sink
        )
    try:
        # Ready when the port accepts connections (nginx binds before it forks workers).
        async with asyncio.timeout(15):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"nginx exited: {log.read_text()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield RunningNginx(f"http://127.0.0.1:{port}", process, log)
    finally:
        if process.returncode is None:
            process.terminate()  # fast shutdown: drops the open streams
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
