"""Where a conform run's RabbitMQ is: a throwaway node of its own (the default), or a
given broker, on a fresh virtual host when its management API lets conform make one.

It exists so that a run never mixes with anything else: another worker consuming the
operation's queue, or a gateway taking its dead letters, would make the cases meaningless
(and conform's requests would reach real workers). A given URL is used as it is only when
no fresh virtual host can be made; `gateway_double` then checks the queue is idle.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from yarl import URL

from gateway.conform.node import ThrowawayNode

__all__ = ["Broker", "broker_for_run", "display_url"]

MANAGEMENT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Broker:
    url: str
    description: str
    fresh: bool
    """A virtual host (or node) of the run's own, deleted afterwards."""


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = URL(url, encoded=True)
    return str(parsed.with_password("***")) if parsed.password else url


@contextlib.asynccontextmanager
async def broker_for_run(broker_url: str | None) -> AsyncIterator[Broker]:
    """The broker of one run, cleaned up when the block ends."""
    if broker_url is None:
        node = ThrowawayNode()
        await node.start()
        try:
            yield Broker(node.url, f"a throwaway RabbitMQ node on port {node.port}", True)
        finally:
            await node.stop()
        return
    url = broker_url.replace(",", " ").split()[0]  # one address of a cluster is enough
    vhost = f"gateway-conform-{secrets.token_hex(4)}"
    management = await _make_vhost(url, vhost)
    if management is None:
        yield Broker(url, f"{display_url(url)}, as given", False)
        return
    try:
        parsed = URL(url, encoded=True)
        fresh = parsed.with_path("/" + vhost).with_query(parsed.query)
        yield Broker(str(fresh), f"a fresh virtual host {vhost} of {display_url(url)}", True)
    finally:
        await _delete_vhost(url, management, vhost)


def _management_base(url: str) -> str:
    """The management API on the broker's host, on its default port."""
    parsed = URL(url, encoded=True)
    scheme, port = ("https", 15671) if parsed.scheme == "amqps" else ("http", 15672)
    return f"{scheme}://{parsed.host or '127.0.0.1'}:{port}/api"


def _auth(url: str) -> tuple[str, str]:
    parsed = URL(url)
    return parsed.user or "guest", parsed.password or "guest"


async def _make_vhost(url: str, vhost: str) -> str | None:
    """Make `vhost` (and let the URL's user use it) through the management API; its base
    URL, or None if that cannot be done (no plugin, no permission)."""
    base = _management_base(url)
    user, password = _auth(url)
    name = quote(vhost, safe="")
    try:
        async with httpx.AsyncClient(auth=(user, password), timeout=MANAGEMENT_TIMEOUT) as http:
            if not _same_node(url, await http.get(f"{base}/overview")):
                return None
            made = await http.put(f"{base}/vhosts/{name}", json={})
            if made.status_code not in (201, 204):
                return None
            allowed = await http.put(
                f"{base}/permissions/{name}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            )
            if allowed.status_code not in (201, 204):
                await http.delete(f"{base}/vhosts/{name}")
                return None
    except (httpx.HTTPError, ValueError):  # ValueError: an overview that is not JSON
        return None
    return base


def _same_node(url: str, overview: httpx.Response) -> bool:
    """Is this management API the broker's own? Another node's (a system RabbitMQ on the
    default management port) would make the virtual host in the wrong place. It is if
    one of its AMQP listeners has the URL's port."""
    if overview.status_code != 200:
        return False
    parsed = URL(url, encoded=True)
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    listeners = overview.json().get("listeners", [])
    return any(
        isinstance(listener, dict)
        and str(listener.get("protocol", "")).startswith("amqp")
        and listener.get("port") == port
        for listener in listeners
    )


async def _delete_vhost(url: str, base: str, vhost: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(auth=_auth(url), timeout=MANAGEMENT_TIMEOUT) as http:
            await http.delete(f"{base}/vhosts/{quote(vhost, safe='')}")
