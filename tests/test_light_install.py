"""Light installs: `pip install amqp-http-gateway` (no extras) gives the Python client, the
worker kit and `gateway call` without the server's dependencies, and the JS package ships
exactly the files its users need.

The Python proof is a fresh venv (no system site packages) holding the base install only,
built from a wheel of this checkout with its dependencies from PyPI. The venv is cached
under var/, keyed by pyproject.toml (the dependencies); the package itself is reinstalled,
without dependencies, whenever its sources change, so a server import that leaks into the
client or worker fails here at once."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.types import JSON
from gateway.worker import JobContext, Worker
from tests.support import ROOT, RabbitNode, RunningGateway

VAR = ROOT / "var"
# Top-level modules of the server extra (and of its own dependencies) that a light install
# must not have at all.
SERVER_ONLY = ("starlette", "sse_starlette", "uvicorn", "prometheus_client", "jwt", "limits")
EXTRA_MISSING = "gateway serve needs the server extra: pip install 'amqp-http-gateway[server]'"
JS = ROOT / "clients" / "js"

# Run by the light venv's python: a worker of `op` and a client call to it, in one process.
LIGHT_SCRIPT = """
import asyncio, importlib.util, sys
import orjson
server_only, broker_url, gateway_url, op = orjson.loads(sys.argv[1])
missing = [name for name in server_only if importlib.util.find_spec(name) is None]
assert missing == server_only, f"installed: {sorted(set(server_only) - set(missing))}"

import gateway.cli
from gateway.client import AsyncClient
from gateway.worker import Worker

async def main():
    worker = Worker(broker_url)

    @worker.operation(op)
    async def add(request, job):
        return {"sum": request["a"] + request["b"]}

    ready = asyncio.Event()
    serving = asyncio.create_task(worker.serve(ready))
    await asyncio.wait_for(ready.wait(), 30)
    async with AsyncClient(gateway_url, validate=True) as client:
        result = await client.call(op, {"a": 2, "b": 3}, timeout=30)
    serving.cancel()
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(server_only))
    print(orjson.dumps({"result": result, "loaded": loaded, "from": gateway.cli.__file__}).decode())

asyncio.run(main())
"""


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        timeout=600,
    )


def _build_wheel(into: Path) -> Path:
    """A wheel of the checkout, built from a copy so that no build/ lands in the tree."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__")
        )
        _pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(into), str(source))
    (wheel,) = into.glob("amqp_http_gateway-*.whl")
    return wheel


@pytest.fixture(scope="module")
def light_python() -> Iterator[Path]:
    """The python of a venv with the base install only (see the module docstring)."""
    VAR.mkdir(exist_ok=True)
    venv = VAR / f"light-venv-{_digest(ROOT / 'pyproject.toml')}"
    python = venv / "bin" / "python"
    sources = _digest(ROOT / "pyproject.toml", *sorted((ROOT / "gateway").rglob("*.py")))
    marker = venv / "installed-sources"
    # Several test runs may share the checkout: one builds, the others wait for it.
    with (VAR / "light-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            for old in VAR.glob("light-venv-*"):
                shutil.rmtree(old)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            with tempfile.TemporaryDirectory() as wheels:
                _pip(python, "install", str(_build_wheel(Path(wheels))))
            marker.write_text(sources)
        elif not marker.exists() or marker.read_text() != sources:
            with tempfile.TemporaryDirectory() as wheels:
                wheel = _build_wheel(Path(wheels))
                _pip(python, "install", "--no-deps", "--force-reinstall", str(wheel))
            marker.write_text(sources)
    yield python


def _run_light(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Away from the checkout and without PYTHONPATH: only the venv's `gateway` is found.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


async def test_base_install_runs_client_and_worker_without_the_server(
    light_python: Path, gateway: RunningGateway, rabbit: RabbitNode, tmp_path: Path
) -> None:
    op = gateway.op("math.add")
    argument = orjson.dumps([list(SERVER_ONLY), rabbit.url, gateway.url, op]).decode()
    # In threads: this test's event loop serves the gateway meanwhile.
    run = await asyncio.to_thread(
        _run_light, light_python, "-c", LIGHT_SCRIPT, argument, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    answer = orjson.loads(run.stdout)
    assert answer["result"] == {"sum": 5}
    assert answer["loaded"] == []
    assert Path(answer["from"]).is_relative_to(light_python.parent.parent)


async def test_base_install_cli_calls_but_cannot_serve(
    light_python: Path,
    gateway: RunningGateway,
    rabbit: RabbitNode,
    run_worker: Callable[[Worker], Awaitable[Worker]],
    tmp_path: Path,
) -> None:
    command = light_python.parent / "gateway"
    serve = await asyncio.to_thread(_run_light, command, "serve", cwd=tmp_path)
    assert serve.returncode == 2
    assert serve.stderr.strip() == EXTRA_MISSING  # one line, no traceback

    op = gateway.op("math.add")
    worker = Worker(rabbit.url)  # this one from the main venv, in this process

    @worker.operation(op)
    async def add(request: Any, job: JobContext) -> JSON:
        return {"sum": request["a"] + request["b"]}

    await run_worker(worker)
    call = await asyncio.to_thread(
        _run_light, command, "call", op, '{"a": 2, "b": 3}', "--url", gateway.url, cwd=tmp_path
    )
    assert call.returncode == 0, call.stderr
    assert orjson.loads(call.stdout) == {"sum": 5}


def test_js_package_ships_exactly_what_users_need() -> None:
    assert shutil.which("npm"), "npm is required"
    packed = subprocess.run(
        ["npm", "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (package,) = orjson.loads(packed.stdout)
    files = {entry["path"] for entry in package["files"]}
    sources = {str(p.relative_to(JS)) for p in (JS / "src").rglob("*") if p.is_file()}
    assert files == {"package.json", "README.md", "index.d.ts", "worker.d.ts", *sources}
    manifest = orjson.loads((JS / "package.json").read_bytes())
    entry_points = {
        manifest["main"],
        manifest["types"],
        *(path for export in manifest["exports"].values() for path in export.values()),
    }
    assert {p.removeprefix("./") for p in entry_points} <= files
