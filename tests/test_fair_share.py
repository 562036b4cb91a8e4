"""Waiter slots are shared fairly: by default a client may hold at most half of the slots
the other clients leave free, so one client's long-polls can never lock the next client
out of a gateway (issue 11, point 4)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.config import AuthSettings
from gateway.errors import TooManyRequests
from gateway.http.access import address_key
from gateway.limits import ClientLimits, WaiterSlot
from tests.fault_support import poll_until, store_job_ids
from tests.support import RunningGateway, make_settings, serve_gateway

KEYS = {"alice": "fair-key-alice-0123", "bob": "fair-key-bob-0123", "carol": "fair-key-carol-0123"}
MAX_WAITERS = 20


def hold(limits: ClientLimits, client: str, n: int) -> list[WaiterSlot]:
    """Take n of `client`'s waiter slots (each checked), as n long-polls would."""
    slots = []
    for _ in range(n):
        slot = limits.waiting(client)
        slot.__enter__()
        slots.append(slot)
    return slots


def test_the_share_is_half_of_what_the_others_leave_free() -> None:
    limits = ClientLimits(None, None, 10_000)
    assert limits.waiter_share("a") == 5_000  # alone: half of all
    hold(limits, "a", 5_000)
    with pytest.raises(TooManyRequests):
        limits.waiting("a")
    assert limits.waiter_share("b") == 2_500
    hold(limits, "b", 2_500)
    assert limits.waiter_share("c") == 1_250
    hold(limits, "c", 1_250)
    # However greedy the clients before, each newcomer finds slots, until the last one
    # is taken (beyond that, the process's own cap answers 503).
    held, newcomers = 8_750, 0
    while held < 10_000:
        newcomers += 1
        share = limits.waiter_share(f"client-{newcomers}")
        assert share is not None and 1 <= share <= (10_000 - held + 1) // 2
        hold(limits, f"client-{newcomers}", share)
        held += share
    assert held == 10_000 and newcomers < 15
    # Explicit limits are static: N each, or (0) none at all.
    fixed = ClientLimits(None, 3, 10)
    hold(fixed, "a", 3)
    with pytest.raises(TooManyRequests):
        fixed.waiting("a")
    assert fixed.waiter_share("b") == 3
    unlimited = ClientLimits(None, 0, 10)
    hold(unlimited, "a", 50)
    assert unlimited.waiter_share("a") is None


def test_a_released_slot_is_free_again() -> None:
    limits = ClientLimits(None, None, 4)
    slots = hold(limits, "a", 2)
    assert limits.waiter_share("b") == 1
    for slot in slots:
        slot.__exit__(None, None, None)
    assert limits.waiter_share("b") == 2
    hold(limits, "a", 2)  # a's own slots never count against it


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    keys = [{"key": key, "subject": who, "scopes": ["ops:*"]} for who, key in KEYS.items()]
    path.write_bytes(orjson.dumps({"keys": keys}))
    return path


async def long_polls_until_refused(
    gw: RunningGateway, http: httpx.AsyncClient, who: str
) -> tuple[str, list[asyncio.Task[httpx.Response]], httpx.Response]:
    """`who` submits a job no worker serves and long-polls it, one request at a time, each
    awaited into place (the gateway's waiter count rises), until one is refused: the job,
    the long-polls held, and the refusal."""
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2}, headers=headers)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    held: list[asyncio.Task[httpx.Response]] = []
    while len(held) <= MAX_WAITERS:
        before = gw.service.hub.waiting
        poll = asyncio.create_task(http.get(f"{location}?wait=60", headers=headers))
        await poll_until(lambda p=poll, n=before: p.done() or gw.service.hub.waiting > n)
        if poll.done():
            return location, held, poll.result()
        held.append(poll)
    raise AssertionError(f"{who} held more waiters than the gateway has")


async def test_one_client_cannot_take_every_waiter_slot(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url, max_waiters=MAX_WAITERS)
    settings = replace(settings, auth=AuthSettings(api_keys_file=key_file(tmp_path)))
    limits = httpx.Limits(max_connections=4 * MAX_WAITERS)
    async with serve_gateway(settings, ops) as gw, gw.client(limits=limits) as http:
        held: dict[str, int] = {}
        jobs: dict[str, str] = {}
        polls: list[asyncio.Task[httpx.Response]] = []
        for who in ("alice", "bob", "carol"):
            jobs[who], waiting, refused = await long_polls_until_refused(gw, http, who)
            held[who] = len(waiting)
            polls += waiting
            # Over its share a client is told to come back: 429, not the process's 503.
            assert refused.status_code == 429, (who, refused.text)
            assert refused.json()["error"]["code"] == "too_many_requests"
            assert int(refused.headers["retry-after"]) > 0
        # Alone, alice got half of the 20; bob half of what she left; carol half of the rest.
        assert held == {"alice": 10, "bob": 5, "carol": 2}
        assert gw.service.hub.waiting == 17
        # At her share, alice may still read her job and its events: only waits take slots.
        alice = {"Authorization": f"Bearer {KEYS['alice']}"}
        assert (await http.get(jobs["alice"], headers=alice)).status_code == 200
        assert (await http.get(f"{jobs['alice']}/events", headers=alice)).status_code == 200
        # A submit that would wait is refused before its job is made (else she would never
        # learn its id); one that does not wait is taken.
        add = gw.op("math.add")
        made = store_job_ids(settings.store_url, add)
        r = await http.post(f"/v1/ops/{add}?wait=5", json={"a": 1, "b": 2}, headers=alice)
        assert r.status_code == 429, r.text
        assert store_job_ids(settings.store_url, add) == made
        r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers=alice)
        assert r.status_code == 202, r.text
        # Cancelling the jobs ends every long-poll, each with the job as it ended.
        for who, location in jobs.items():
            headers = {"Authorization": f"Bearer {KEYS[who]}"}
            assert (await http.delete(location, headers=headers)).status_code == 200
        answers = await asyncio.gather(*polls)
        assert {(r.status_code, r.json()["status"]) for r in answers} == {(200, "cancelled")}
        await poll_until(lambda: gw.service.hub.waiting == 0)


def test_an_ipv6_client_is_its_64_block() -> None:
    """A host picks any address of its /64 at will: each must not be another client."""
    assert address_key("2001:db8:1:2::9") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::9") != address_key("2001:db8:1:2::9")
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1" == address_key("10.0.0.1")
    assert address_key("10.0.0.1") != address_key("10.0.0.2")
