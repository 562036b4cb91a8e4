"""A three-node RabbitMQ cluster on one machine, for the tests: distinct node names,
ports and data dirs; one Erlang cookie and one epmd, so the nodes find each other."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from tests.support import RabbitNode, free_port


class RabbitCluster:
    def __init__(self, directory: Path, size: int = 3) -> None:
        epmd = free_port()
        cookie = secrets.token_hex(16)
        tag = secrets.token_hex(3)
        self.nodes = []
        for n in range(1, size + 1):
            node_dir = directory / f"node{n}"
            node_dir.mkdir(parents=True)
            cookie_file = node_dir / ".erlang.cookie"  # the node's HOME is its dir
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
            self.nodes.append(RabbitNode(node_dir, name=f"gw-cluster-{tag}-{n}", epmd_port=epmd))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node.ctl("-q", "stop_app")
            node.ctl("-q", "join_cluster", f"{first.name}@localhost")
            node.ctl("-q", "start_app")

    def stop(self) -> None:
        """SIGKILL every node still running, and their epmd: the cluster's data is thrown
        away, and stopping clustered nodes gracefully one by one can outlast a test's
        timeout on a loaded machine."""
        for node in self.nodes:
            node.kill_if_running(signal.SIGKILL)
        epmd_port = self.nodes[0].env["RABBITMQ_LOCAL_EPMD_PORT"]
        # epmd refuses -kill while it still lists a (dead) node: ask until it is gone.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            subprocess.run(["epmd", "-port", epmd_port, "-kill"], capture_output=True)
            names = subprocess.run(["epmd", "-port", epmd_port, "-names"], capture_output=True)
            if names.returncode != 0:  # no epmd answers on that port any more
                return
            time.sleep(0.1)  # teardown retry, not a wait for an event


@contextmanager
def running_cluster(directory: Path, size: int = 3) -> Iterator[RabbitCluster]:
    """A cluster started in `directory`, stopped at the end (also if it failed to start)."""
    cluster = RabbitCluster(directory, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def queue_info(node: RabbitNode, queue: str) -> dict[str, object]:
    """What `rabbitmqctl list_queues` says of `queue` (leader, members, online, type),
    asked of `node` (a running one)."""
    columns = ["name", "type", "leader", "members", "online"]
    rows = orjson.loads(node.ctl_output("-q", "list_queues", *columns, "--formatter", "json"))
    found: dict[str, object] = next(row for row in rows if row["name"] == queue)
    return found
