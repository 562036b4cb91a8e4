"""Topic streams with auth on: `topics:publish:<p>` and `topics:subscribe:<p>` scopes
(`*`, a family, a key and the keys below it, by whole words), and subscribe tokens: a
holder of the subscribe scope mints one for one topic; as `?access_token=` it opens that
topic's events (SSE and long-poll), read-only, and nothing else, until it expires. Every
refusal is the JSON error body."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import orjson
import pytest

from gateway.auth import Authenticator
from gateway.config import AuthSettings
from tests.fault_support import SseEvent, assert_error_body, sse_events
from tests.support import RabbitNode, RunningGateway, make_settings, serve_gateway

SSE = {"Accept": "text/event-stream"}
HS_SECRET = "hs256-topic-secret-" + "x" * 32
TOKEN_SECRET = "topic-token-secret-for-the-tests"
TTL = 120.0
"""The gateway's subscribe token lifetime in these tests."""
# API keys, by what they may do (their scopes are set per test: the family's name is).
KEYS = {
    name: f"key-{name}-0123456789"
    for name in ("sub-family", "sub-room", "pub-room", "pub-any", "ops", "both")
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[key]}"}


def said(text: str) -> dict[str, str]:
    return {"from": "test", "text": text}


def auth_settings(tmp_path: Path, family: str) -> AuthSettings:
    scopes = {
        "sub-family": [f"topics:subscribe:{family}"],
        "sub-room": [f"topics:subscribe:{family}.r1"],
        "pub-room": [f"topics:publish:{family}.r1"],
        "pub-any": ["topics:publish:*"],
        "ops": ["ops:*"],
        "both": ["topics:publish:*", "topics:subscribe:*", "ops:*"],
    }
    path = tmp_path / "keys.json"
    path.write_bytes(
        orjson.dumps(
            {
                "keys": [
                    {
                        "key_sha256": hashlib.sha256(KEYS[name].encode()).hexdigest(),
                        "subject": name,
                        "scopes": scopes[name],
                    }
                    for name in KEYS
                ]
            }
        )
    )
    return AuthSettings(
        api_keys_file=path,
        jwt_secret=HS_SECRET,
        job_token_secret=TOKEN_SECRET,  # shared, so `minter` makes tokens the gateway takes
        topic_token_ttl_seconds=TTL,
    )


@pytest.fixture
async def gw(rabbit: RabbitNode, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    settings, names = make_settings(tmp_path, rabbit.url, topics={}, sse_ping_seconds=1.0)
    settings = replace(settings, auth=auth_settings(tmp_path, names["chat.room"]))
    async with serve_gateway(settings, names) as running:
        yield running


def minter(gw: RunningGateway) -> Authenticator:
    """An authenticator with the gateway's settings: what it issues, the gateway takes
    (as another instance's would be, given the same secret)."""
    return Authenticator(gw.settings.auth)


def refused(response: httpx.Response, status: int) -> None:
    """`status` with the JSON error body (and, for 401, a Bearer challenge)."""
    assert_error_body(response, status)
    code = {401: "unauthorized", 403: "forbidden"}[status]
    assert response.json()["error"]["code"] == code, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def sse_status(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> int:
    """Open an SSE subscription; its status (a refusal's body is checked as an error)."""
    async with http.stream("GET", url, headers={**SSE, **headers}) as response:
        if response.status_code != 200:
            await response.aread()
            refused(response, response.status_code)
        else:
            assert response.headers["content-type"].startswith("text/event-stream")
        return response.status_code


async def subscribe_refused(
    http: httpx.AsyncClient, topic: str, status: int, headers: dict[str, str], query: str = ""
) -> None:
    """Both ways of subscribing to `topic` are refused with `status`."""
    url = f"/v1/topics/{topic}/events{query}"
    assert await sse_status(http, url, headers) == status, (topic, headers, query)
    join = "&" if query else "?"
    refused(await http.get(f"{url}{join}after=0", headers=headers), status)


async def subscribe_allowed(
    http: httpx.AsyncClient, topic: str, headers: dict[str, str], query: str = ""
) -> None:
    url = f"/v1/topics/{topic}/events{query}"
    assert await sse_status(http, url, headers) == 200, (topic, headers, query)
    join = "&" if query else "?"
    response = await http.get(f"{url}{join}after=0", headers=headers)
    assert response.status_code == 200, response.text


async def position(http: httpx.AsyncClient, topic: str) -> int:
    """Where a subscriber starting now starts (`next` of a long-poll that does not wait)."""
    response = await http.get(f"/v1/topics/{topic}/events", headers=bearer("both"))
    assert response.status_code == 200, response.text
    next_seq: int = response.json()["next"]
    return next_seq


async def take(events: AsyncIterator[SseEvent], count: int) -> list[SseEvent]:
    async with asyncio.timeout(30):
        return [await anext(events) for _ in range(count)]


async def test_without_a_token_every_topic_route_is_401(gw: RunningGateway) -> None:
    family = gw.topic("chat.room")
    topic = f"{family}.r1"
    async with gw.client() as http:
        refused(await http.get("/v1/topics"), 401)
        refused(await http.get(f"/v1/topics/{topic}"), 401)
        refused(await http.post(f"/v1/topics/{topic}", json=said("hi")), 401)
        refused(await http.post(f"/v1/topics/{topic}/tokens"), 401)
        for subscription in (family, topic):
            await subscribe_refused(http, subscription, 401, {})
        # Not a key, not a bearer token, an expired JWT: the same.
        expired = jwt.encode(
            {"sub": "x", "scope": "topics:publish:*", "exp": int(time.time()) - 10},
            HS_SECRET,
            algorithm="HS256",
        )
        for headers in (
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Basic {KEYS['pub-any']}"},
            {"Authorization": f"Bearer {expired}"},
        ):
            refused(await http.post(f"/v1/topics/{topic}", json=said("hi"), headers=headers), 401)
            await subscribe_refused(http, topic, 401, headers)
        # Nothing was published by all that.
        replay = await http.get(f"/v1/topics/{family}/events?after=0", headers=bearer("both"))
        assert replay.json()["events"] == []


async def test_publish_and_subscribe_scopes(gw: RunningGateway) -> None:
    family = gw.topic("chat.room")
    r1, r2 = f"{family}.r1", f"{family}.r2"
    async with gw.client() as http:

        async def publish(key: str, topic: str, text: str) -> httpx.Response:
            return await http.post(f"/v1/topics/{topic}", json=said(text), headers=bearer(key))

        start = await position(http, family)
        async with http.stream(
            "GET", f"/v1/topics/{family}/events", headers={**SSE, **bearer("sub-family")}
        ) as stream:
            assert stream.status_code == 200
            events = sse_events(stream)
            # topics:subscribe:<family> subscribes, to the family and to each key of it,
            # and publishes nothing.
            await subscribe_allowed(http, r2, bearer("sub-family"))
            for topic in (family, r1, r2):
                refused(await publish("sub-family", topic, "no"), 403)
            # topics:publish:<family>.r1: that room and the keys below it, by whole words;
            # not another room, not one whose name merely starts alike, not the family.
            for topic in (r1, f"{r1}.thread"):
                response = await publish("pub-room", topic, f"to {topic}")
                assert response.status_code == 202, response.text
                assert response.json()["topic"] == topic
            for topic in (r2, f"{family}.r10", family):
                refused(await publish("pub-room", topic, "no"), 403)
            # ... and it subscribes to nothing.
            for topic in (r1, family):
                await subscribe_refused(http, topic, 403, bearer("pub-room"))
            # topics:publish:* publishes anywhere (and subscribes nowhere).
            for topic in (r2, family):
                response = await publish("pub-any", topic, f"to {topic}")
                assert response.status_code == 202, response.text
            await subscribe_refused(http, r2, 403, bearer("pub-any"))
            # A JWT's scopes work as a key's.
            token = jwt.encode(
                {
                    "sub": "jay",
                    "scope": f"topics:publish:{r2} ops:*",
                    "exp": int(time.time()) + 300,
                },
                HS_SECRET,
                algorithm="HS256",
            )
            response = await http.post(
                f"/v1/topics/{r2}",
                json=said("by jwt"),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 202, response.text
            response = await http.post(
                f"/v1/topics/{r1}", json=said("no"), headers={"Authorization": f"Bearer {token}"}
            )
            refused(response, 403)
            got = await take(events, 5)
        expected = [f"to {r1}", f"to {r1}.thread", f"to {r2}", f"to {family}", "by jwt"]
        assert [e.data["text"] for e in got] == expected
        # Refused publishes left nothing in the stream.
        polled = await http.get(
            f"/v1/topics/{family}/events?after={start}", headers=bearer("sub-family")
        )
        assert [e["data"]["text"] for e in polled.json()["events"]] == expected

        # topics:subscribe:<family>.r1: that room (and below), not the family, not r2.
        await subscribe_allowed(http, r1, bearer("sub-room"))
        await subscribe_allowed(http, f"{r1}.thread", bearer("sub-room"))
        for topic in (family, r2, f"{family}.r10"):
            await subscribe_refused(http, topic, 403, bearer("sub-room"))
        refused(await publish("sub-room", r1, "no"), 403)

        # ops:* is no scope for topics.
        refused(await publish("ops", r1, "no"), 403)
        for topic in (family, r1):
            await subscribe_refused(http, topic, 403, bearer("ops"))
            refused(await http.post(f"/v1/topics/{topic}/tokens", headers=bearer("ops")), 403)


async def test_a_subscribe_token_needs_the_subscribe_scope(gw: RunningGateway) -> None:
    family = gw.topic("chat.room")
    r1 = f"{family}.r1"
    async with gw.client() as http:
        for key, topic in (
            ("sub-family", family),
            ("sub-family", r1),
            ("sub-room", r1),
            ("sub-room", f"{r1}.thread"),
        ):
            before = time.time()
            response = await http.post(f"/v1/topics/{topic}/tokens", headers=bearer(key))
            assert response.status_code == 200, (key, topic, response.text)
            body = response.json()
            assert set(body) == {"token", "topic", "expires_at", "events"}
            assert body["topic"] == topic
            assert isinstance(body["expires_at"], int)
            assert before + TTL - 1 <= body["expires_at"] <= time.time() + TTL
            assert body["events"] == f"/v1/topics/{topic}/events?access_token={body['token']}"
        for key, topic in (
            ("sub-room", family),
            ("sub-room", f"{family}.r2"),
            ("pub-room", r1),
            ("pub-any", r1),
            ("ops", r1),
        ):
            response = await http.post(f"/v1/topics/{topic}/tokens", headers=bearer(key))
            refused(response, 403)
        response = await http.post("/v1/topics/no.such.topic/tokens", headers=bearer("both"))
        assert_error_body(response, 404)


async def test_a_subscribe_token_opens_its_topics_events_and_nothing_else(
    gw: RunningGateway,
) -> None:
    family = gw.topic("chat.room")
    r1, r2 = f"{family}.r1", f"{family}.r2"
    async with gw.client() as http:
        minted = await http.post(f"/v1/topics/{r1}/tokens", headers=bearer("sub-family"))
        body = minted.json()
        token, events_url = body["token"], body["events"]
        query = f"?access_token={token}"
        start = await position(http, r1)

        # It opens r1's events: SSE (as EventSource would, with the URL as given) ...
        async with http.stream("GET", events_url, headers=SSE) as stream:
            assert stream.status_code == 200
            events = sse_events(stream)
            for topic, text in ((r2, "elsewhere"), (r1, "one"), (family, "all"), (r1, "two")):
                response = await http.post(
                    f"/v1/topics/{topic}", json=said(text), headers=bearer("pub-any")
                )
                assert response.status_code == 202, response.text
            got = await take(events, 2)
        assert [e.data["text"] for e in got] == ["one", "two"]
        # ... and long-poll, resuming as any subscriber does.
        polled = await http.get(f"/v1/topics/{r1}/events{query}&after={start}&wait=5")
        assert polled.status_code == 200, polled.text
        assert [e["data"]["text"] for e in polled.json()["events"]] == ["one", "two"]
        assert [e["seq"] for e in polled.json()["events"]] == [e.id for e in got]
        waiting = asyncio.ensure_future(
            http.get(f"/v1/topics/{r1}/events{query}&after={polled.json()['next']}&wait=20")
        )
        response = await http.post(f"/v1/topics/{r1}", json=said("three"), headers=bearer("both"))
        assert response.status_code == 202
        live = await waiting
        assert [e["data"]["text"] for e in live.json()["events"]] == ["three"]

        # Not another topic's events, not the family's, not a key below it.
        for topic in (r2, family, f"{r1}.thread", f"{family}.r10"):
            await subscribe_refused(http, topic, 401, {}, query)
        # Read-only: no publishing, no minting, no listing, no contract.
        refused(await http.post(f"/v1/topics/{r1}{query}", json=said("no")), 401)
        refused(await http.post(f"/v1/topics/{r1}/tokens{query}"), 401)
        refused(await http.get(f"/v1/topics{query}"), 401)
        refused(await http.get(f"/v1/topics/{r1}{query}"), 401)
        # As a bearer token it is nothing.
        refused(
            await http.get(f"/v1/topics/{r1}/events", headers={"Authorization": f"Bearer {token}"}),
            401,
        )
        # Forged: another expiry, or another signature.
        expires, _, signature = token.partition(".")
        for forged in (
            f"{int(expires) + 3600}.{signature}",
            f"{expires}.{signature[:-4]}{'0000' if not signature.endswith('0000') else '1111'}",
            "",
            "x.y",
        ):
            await subscribe_refused(http, r1, 401, {}, f"?access_token={forged}")

        # A family's token opens the family, not a key of it.
        family_token = (
            await http.post(f"/v1/topics/{family}/tokens", headers=bearer("sub-family"))
        ).json()["token"]
        await subscribe_allowed(http, family, {}, f"?access_token={family_token}")
        await subscribe_refused(http, r1, 401, {}, f"?access_token={family_token}")


async def test_subscribe_tokens_and_job_tokens_open_only_their_own_kind(
    gw: RunningGateway,
) -> None:
    r1 = f"{gw.topic('chat.room')}.r1"
    async with gw.client() as http:
        job = await http.post(
            f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2}, headers=bearer("both")
        )
        assert job.status_code == 202, job.text
        job_id, job_token = job.json()["id"], job.json()["job_token"]
        topic_token = (await http.post(f"/v1/topics/{r1}/tokens", headers=bearer("both"))).json()[
            "token"
        ]
        # Each opens its own ...
        response = await http.get(f"/v1/jobs/{job_id}?access_token={job_token}")
        assert response.status_code == 200, response.text
        await subscribe_allowed(http, r1, {}, f"?access_token={topic_token}")
        # ... and not the other kind's.
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            refused(await http.get(f"{path}?access_token={topic_token}"), 401)
        refused(await http.get(f"/v1/jobs/{job_id}?access_token={topic_token}&wait=1"), 401)
        await subscribe_refused(http, r1, 401, {}, f"?access_token={job_token}")
        # A job token for a job named like the topic is still a job token.
        named_like = minter(gw).issue_job_token(r1)
        await subscribe_refused(http, r1, 401, {}, f"?access_token={named_like}")


async def test_an_expired_subscribe_token_is_refused(gw: RunningGateway) -> None:
    r1 = f"{gw.topic('chat.room')}.r1"
    token, expires = minter(gw).issue_topic_token(r1, now=time.time() - 3600)
    assert expires < time.time()
    async with gw.client() as http:
        await subscribe_refused(http, r1, 401, {}, f"?access_token={token}")
        response = await http.get(f"/v1/topics/{r1}/events?access_token={token}")
        assert "expired" in response.json()["error"]["message"]
        # One minted by the same authenticator, unexpired, is taken: the refusal above
        # was the expiry's.
        fresh, _ = minter(gw).issue_topic_token(r1)
        await subscribe_allowed(http, r1, {}, f"?access_token={fresh}")


async def test_a_stream_opened_before_its_token_expired_goes_on_after_it(
    gw: RunningGateway,
) -> None:
    """The token is checked when a subscription opens: a stream open when it expires
    keeps streaming (as EventSource would, it must not reconnect with it: its next
    connect is refused); the browser mints a new token to reconnect."""
    r1 = f"{gw.topic('chat.room')}.r1"
    # Expiring in 4-5 s: time enough to open the stream on a loaded machine.
    token, expires = minter(gw).issue_topic_token(r1, now=time.time() - TTL + 5)
    query = f"?access_token={token}"
    async with gw.client() as http:

        async def publish(text: str) -> None:
            response = await http.post(
                f"/v1/topics/{r1}", json=said(text), headers=bearer("pub-any")
            )
            assert response.status_code == 202, response.text

        async with http.stream("GET", f"/v1/topics/{r1}/events{query}", headers=SSE) as stream:
            assert stream.status_code == 200
            events = sse_events(stream)
            await publish("before")
            before = await take(events, 1)
            # The expiry is a moment on the clock, not an event: wait for that moment.
            await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
            assert time.time() > expires
            await subscribe_refused(http, r1, 401, {}, query)
            await publish("after")
            after = await take(events, 1)
    assert [e.data["text"] for e in before + after] == ["before", "after"]
