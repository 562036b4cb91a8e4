"""`make run` (deploy/run-local.sh) as a user runs it, on private ports and files: the
gateway gets ready, the browser example is served on its own origin and that origin is
allowed by CORS, killing the script's whole process group leaves the project-local
RabbitMQ node up (it runs in a session of its own), and `rabbitmq-local.sh stop` then
leaves no process of the node behind, epmd included (nor does `status` start one)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import BROKER_SCRIPT, ROOT, free_port

RUN_LOCAL = ROOT / "deploy" / "run-local.sh"
USER_ORIGIN = "https://app.example"

pytestmark = pytest.mark.timeout(120)


def poll(condition: Callable[[], bool], limit: float, what: str) -> None:
    """Poll `condition` (state of other processes, which sends no event) until it holds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        time.sleep(0.05)


def live_processes() -> Iterator[tuple[int, int, bytes]]:
    """(pid, process group, environment) of every live process of ours; zombies (whose
    parent has not reaped them yet) are no longer running and are skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if state != "Z":
            yield int(entry.name), int(pgrp), environ


def node_processes(epmd_port: int) -> list[int]:
    """The node's processes: rabbitmq-local.sh gives the node (and so the epmd it
    starts, and what rabbitmqctl starts) this private epmd port in the environment."""
    marker = f"ERL_EPMD_PORT={epmd_port}".encode()
    return [pid for pid, _, environ in live_processes() if marker in environ.split(b"\0")]


def group_processes(pgrp: int) -> list[int]:
    return [pid for pid, group, _ in live_processes() if group == pgrp]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, follow_redirects=True).status_code == 200
    except httpx.TransportError:
        return False


def test_process_group_kill_leaves_the_node_up_and_stop_leaves_nothing(tmp_path: Path) -> None:
    port, example_port, epmd_port = free_port(), free_port(), free_port()
    # None of the caller's gateway settings: run-local.sh must start its own node.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {
        "RABBITMQ_LOCAL_DIR": str(tmp_path / "rabbitmq"),
        "RABBITMQ_LOCAL_PORT": str(free_port()),
        "RABBITMQ_LOCAL_DIST_PORT": str(free_port()),
        "RABBITMQ_LOCAL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_LOCAL_NODENAME": f"gateway-run-local-{os.getpid()}",
        "GATEWAY_PORT": str(port),
        "GATEWAY_EXAMPLE_PORT": str(example_port),
        "GATEWAY_STORE": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "GATEWAY_CORS_ORIGINS": USER_ORIGIN,
    }

    def script(command: str) -> int:
        return subprocess.run([str(BROKER_SCRIPT), command], env=env, check=False).returncode

    gateway = f"http://127.0.0.1:{port}"
    example = f"http://127.0.0.1:{example_port}"
    with (tmp_path / "run-local.log").open("wb") as log:
        run = subprocess.Popen(
            [str(RUN_LOCAL)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        poll(lambda: answers(f"{gateway}/readyz"), 90, "the gateway ready")
        poll(lambda: answers(f"{example}/"), 30, "the browser example served")

        # The example: `/` opens the page pointed at this gateway; the page and the client
        # module it imports are served, and nothing else of the checkout is.
        page = httpx.get(f"{example}/", follow_redirects=True)
        assert page.status_code == 200 and "report-form" in page.text
        assert page.url.params["gateway"] == gateway
        module = httpx.get(f"{example}/clients/js/src/index.js")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]
        assert httpx.get(f"{example}/examples/browser/app.js").status_code == 200
        for private in ("/README.md", "/var/gateway.sqlite3", "/deploy/run-local.sh"):
            assert httpx.get(f"{example}{private}").status_code == 404, private
        # The console is served by the gateway itself, with its client module.
        console = httpx.get(f"{gateway}/console/")
        assert console.status_code == 200 and "js/app.js" in console.text
        assert httpx.get(f"{gateway}/console/client/index.js").status_code == 200
        # The gateway allows the page's origin (by either name), and keeps the caller's.
        for origin in (example, f"http://localhost:{example_port}", USER_ORIGIN):
            allowed = httpx.get(f"{gateway}/v1/ops", headers={"Origin": origin})
            assert allowed.headers.get("access-control-allow-origin") == origin, origin

        # Killing the script's whole group ends all of it, and the node stays up.
        pgrp = os.getpgid(run.pid)
        os.killpg(pgrp, signal.SIGKILL)
        run.wait(10)
        poll(lambda: not group_processes(pgrp), 10, "the process group gone")
        assert not answers(f"{gateway}/healthz")
        assert script("status") == 0, "the node went down with `make run`'s process group"
        assert node_processes(epmd_port)

        # `stop` leaves nothing of the node, epmd included, and `status` starts nothing.
        assert script("stop") == 0
        poll(lambda: not node_processes(epmd_port), 20, "the node's processes gone")
        assert script("status") != 0
        assert node_processes(epmd_port) == [], "`status` started a process (epmd?)"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        if node_processes(epmd_port):
            script("stop")
