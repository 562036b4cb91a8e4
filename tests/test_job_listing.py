"""Listing jobs and per-operation timings: the store queries `list_jobs` and
`recent_timings` on SQLite, PostgreSQL and memory, and the router that merges memory with
a durable store; then `GET /v1/jobs` on a real gateway, with auth off and on."""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest

from gateway.auth import Principal
from gateway.config import AuthSettings
from gateway.errors import Forbidden
from gateway.http.jobs import listed_owner
from gateway.jobs import Job, new_job
from gateway.store import JobQuery, JobStore, open_store
from gateway.store.memory import MemoryStore
from gateway.store.routing import DurabilityRouter
from tests.postgres_support import fresh_database
from tests.support import make_settings, serve_gateway
from tests.test_lifecycle import contract

# Ids whose bytewise order (Python's, SQLite's, PostgreSQL's "C") differs from a
# language's collation (which puts "a" next to "A" and overlooks "-" and "_").
TIED_IDS = ["B", "Ab", "a-c", "a_b", "ab", "aB", "Z9", "z"]


async def icu_database(url: str) -> str:
    """A new database whose default collation is a language's (ICU English), as most
    production databases have, not the test server's "C"; its URL."""
    name = "t_" + secrets.token_hex(6)
    db = await asyncpg.connect(url)
    try:
        await db.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8 '
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
        )
    finally:
        await db.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """An open, empty store of each kind."""
    store: JobStore
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    else:
        store = open_store(await icu_database(request.getfixturevalue("postgres_url")))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def put(
    store: JobStore,
    op: str = "op",
    *,
    at: float,
    owner: str | None = None,
    job_id: str | None = None,
) -> Job:
    """A new queued job created (and last updated) at `at`."""
    job, first = new_job(op, owner=owner)
    job = replace(job, id=job_id or job.id, created_at=at, updated_at=at)
    first = replace(first, job_id=job.id, time=at)
    assert (await store.create(job, first, b"{}")).created
    return job


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


def newest_first(jobs: list[Job]) -> list[str]:
    return ids(sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True))


EVERYONE = JobQuery(everyone=True, limit=100)


async def test_jobs_are_listed_newest_first_and_filtered(store: JobStore) -> None:
    t = 1_700_000_000.0
    a1 = await put(store, "a", at=t + 1)
    b1 = await put(store, "b", at=t + 2)
    a2 = await put(store, "a", at=t + 3)
    b2 = await put(store, "b", at=t + 4)
    a3 = await put(store, "a", at=t + 5)
    await store.record(a2.id, "cancelled", {"code": "cancelled", "message": "x"})
    await store.record(b2.id, "cancelled", {"code": "cancelled", "message": "x"})
    await store.record(a3.id, "started", None)

    assert ids(await store.list_jobs(EVERYONE)) == [a3.id, b2.id, a2.id, b1.id, a1.id]
    assert ids(await store.list_jobs(replace(EVERYONE, op="a"))) == [a3.id, a2.id, a1.id]
    assert ids(await store.list_jobs(replace(EVERYONE, status="cancelled"))) == [b2.id, a2.id]
    both = replace(EVERYONE, op="a", status="cancelled")
    assert ids(await store.list_jobs(both)) == [a2.id]
    assert ids(await store.list_jobs(replace(EVERYONE, status="running"))) == [a3.id]
    assert await store.list_jobs(replace(EVERYONE, status="failed")) == []
    assert await store.list_jobs(replace(EVERYONE, op="c")) == []
    assert ids(await store.list_jobs(replace(EVERYONE, limit=2))) == [a3.id, b2.id]
    # The listed jobs are whole: as `get` reads them.
    listed = await store.list_jobs(replace(EVERYONE, op="a", status="running"))
    assert listed == [await store.get(a3.id)]


async def test_paging_through_tied_times_loses_and_repeats_nothing(store: JobStore) -> None:
    t = 1_700_000_000.123456
    tied = [await put(store, at=t, job_id=i) for i in TIED_IDS]
    others = [await put(store, at=t + d) for d in (-2.0, -1.0, 1.0, 2.0)]
    expected = newest_first(tied + others)
    assert ids(await store.list_jobs(EVERYONE)) == expected

    for size in (1, 2, 3, 5):
        seen: list[str] = []
        before: tuple[float, str] | None = None
        while True:
            page = await store.list_jobs(JobQuery(everyone=True, before=before, limit=size))
            seen += ids(page)
            if len(page) < size:
                break
            before = (page[-1].created_at, page[-1].id)
        assert seen == expected, size


async def test_only_the_owner_s_jobs_are_listed(store: JobStore) -> None:
    t = 1_700_000_000.0
    alice = [await put(store, at=t + i, owner="key:alice") for i in range(3)]
    bob = [await put(store, "b", at=t + 10 + i, owner="key:bob") for i in range(2)]
    nobody = await put(store, at=t + 20)

    assert ids(await store.list_jobs(JobQuery(owner="key:alice"))) == newest_first(alice)
    assert ids(await store.list_jobs(JobQuery(owner="key:bob"))) == newest_first(bob)
    assert await store.list_jobs(JobQuery(owner="key:carol")) == []
    assert await store.list_jobs(JobQuery(owner="key:alice", op="b")) == []
    everyone = await store.list_jobs(EVERYONE)
    assert ids(everyone) == newest_first([*alice, *bob, nobody])
    last = alice[1]
    page = await store.list_jobs(
        JobQuery(owner="key:alice", before=(last.created_at, last.id), limit=5)
    )
    assert ids(page) == [alice[0].id]


def test_a_query_names_whose_jobs() -> None:
    for whose in ({}, {"owner": "key:alice", "everyone": True}):
        with pytest.raises(ValueError):
            JobQuery(**whose)  # type: ignore[arg-type]


async def test_a_cursor_is_only_ever_a_position(store: JobStore) -> None:
    job = await put(store, at=1_700_000_000.0, job_id="j1")
    for text in ("' OR 1=1 --", "z'); DROP TABLE jobs; --", "é"):
        page = await store.list_jobs(JobQuery(everyone=True, before=(2e9, text)))
        assert page == [job]
        assert await store.list_jobs(JobQuery(everyone=True, op=text)) == []
        assert await store.list_jobs(JobQuery(owner=text)) == []
    assert await store.get(job.id) == job


async def test_recent_timings_time_the_first_answer(store: JobStore) -> None:
    t = time.time()
    old = await put(store, "op", at=t - 100)
    done = await put(store, "op", at=t - 10)
    started = await store.record(done.id, "started", None)
    await store.record(done.id, "progress", {"p": 1})
    await store.record(done.id, "result", {"r": 1})
    failed = await put(store, "op", at=t - 9)
    errored = await store.record(failed.id, "error", {"code": "x", "message": "y"})
    cancelled = await put(store, "op", at=t - 8)
    await store.record(cancelled.id, "cancelled", {"code": "cancelled", "message": "x"})
    waiting = await put(store, "op", at=t - 7)
    await put(store, "other", at=t - 6)
    assert started is not None and started.event is not None
    assert errored is not None and errored.event is not None

    timings = await store.recent_timings("op", t - 50)
    # Most recently updated first: `waiting` was made last but `cancelled` updated later.
    assert [(x.status, x.created_at, x.answered_at) for x in timings] == [
        ("cancelled", cancelled.created_at, None),
        ("failed", failed.created_at, errored.event.time),
        ("succeeded", done.created_at, started.event.time),
        ("queued", waiting.created_at, None),
    ]
    assert [x.updated_at for x in timings] == sorted((x.updated_at for x in timings), reverse=True)
    assert timings[3].updated_at == waiting.updated_at
    # `since` is of updates: an old job updated since counts, one that was not does not.
    await store.record(old.id, "started", None)
    assert [x.created_at for x in await store.recent_timings("op", t - 50)].count(
        old.created_at
    ) == 1
    assert len(await store.recent_timings("op", t - 50, limit=2)) == 2
    assert await store.recent_timings("op", t + 3600) == []
    assert await store.recent_timings("nope", 0) == []


async def test_the_router_merges_light_and_durable_jobs(tmp_path: Path) -> None:
    durable = open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    router = DurabilityRouter(durable, MemoryStore(), {"quick"})
    await router.open()
    try:
        t = 1_700_000_000.0
        jobs = [await put(router, "quick" if i % 3 else "slow", at=t + i) for i in range(9)]
        tied = [await put(router, op, at=t + 4, job_id=f"x{op}") for op in ("quick", "slow")]
        everything = newest_first(jobs + tied)
        assert ids(await router.list_jobs(EVERYONE)) == everything
        assert ids(await router.list_jobs(replace(EVERYONE, limit=4))) == everything[:4]
        light = [j for j in jobs + tied if j.op == "quick"]
        assert ids(await router.list_jobs(replace(EVERYONE, op="quick"))) == newest_first(light)
        seen: list[str] = []
        before = None
        while page := await router.list_jobs(JobQuery(everyone=True, before=before, limit=3)):
            seen += ids(page)
            before = (page[-1].created_at, page[-1].id)
        assert seen == everything
        assert len(await router.recent_timings("quick", 0)) == len(light)
        assert len(await router.recent_timings("slow", 0)) == len(jobs) + len(tied) - len(light)
    finally:
        await router.close()


LISTING_INDEXES = {"jobs_op_updated", "jobs_recent", "jobs_op_recent", "jobs_owner_recent"}


async def test_an_existing_sqlite_file_gets_the_indexes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    job = await put(store, at=1_700_000_000.0)
    await store.close()
    # The file as the version before left it: its one (op, updated_at) index partial.
    with sqlite3.connect(path) as db:
        for name in LISTING_INDEXES:
            db.execute(f"DROP INDEX {name}")
        db.execute(
            "CREATE INDEX jobs_finished ON jobs (op, updated_at) "
            "WHERE status IN ('succeeded', 'failed', 'cancelled', 'expired')"
        )
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.list_jobs(EVERYONE) == [job]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert names >= LISTING_INDEXES
    assert "jobs_finished" not in names


async def test_an_existing_postgres_database_gets_the_indexes(postgres_url: str) -> None:
    url = await fresh_database(postgres_url)
    store = open_store(url)
    await store.open()
    job = await put(store, at=1_700_000_000.0)
    await store.close()
    db = await asyncpg.connect(url)
    try:
        for name in LISTING_INDEXES:
            await db.execute(f"DROP INDEX gateway_{name}")
        await db.execute(
            "CREATE INDEX gateway_jobs_finished ON gateway_jobs (op, updated_at) "
            "WHERE status IN ('succeeded', 'failed', 'cancelled', 'expired')"
        )
        store = open_store(url)
        await store.open()
        try:
            assert await store.list_jobs(EVERYONE) == [job]
        finally:
            await store.close()
        rows = await db.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'gateway_jobs'")
    finally:
        await db.close()
    names = {r[0] for r in rows}
    assert {f"gateway_{name}" for name in LISTING_INDEXES} <= names
    assert "gateway_jobs_finished" not in names


# -- GET /v1/jobs ---------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def submit(http: httpx.AsyncClient, op: str, headers: dict[str, str] | None = None) -> Any:
    r = await http.post(f"/v1/ops/{op}", json={"a": 1, "b": 2}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


async def listing(http: httpx.AsyncClient, query: str = "", **kwargs: Any) -> Any:
    r = await http.get(f"/v1/jobs{query}", **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"jobs", "next_cursor"}
    return body


async def every_page(http: httpx.AsyncClient, query: str, **kwargs: Any) -> list[str]:
    seen: list[str] = []
    body = await listing(http, query, **kwargs)
    while True:
        seen += [j["id"] for j in body["jobs"]]
        if body["next_cursor"] is None:
            return seen
        body = await listing(http, f"{query}&cursor={body['next_cursor']}", **kwargs)


def cursor_of(value: object) -> str:
    return raw_cursor(orjson.dumps(value))


LONE_SURROGATE = rb'[1, "\ud800"]'  # JSON, but no string Python or PostgreSQL could hold


def raw_cursor(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


async def test_auth_off_lists_every_job_in_pages(rabbit, tmp_path: Path) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url, {"quick": contract(durability="light")})
    add, echo, quick = ops["math.add"], ops["echo"], ops["quick"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        assert await listing(http) == {"jobs": [], "next_cursor": None}
        made = [await submit(http, op) for op in (add, echo, quick, add, quick, echo, add)]
        cancelled = (await http.delete(f"/v1/jobs/{made[3]['id']}")).json()
        assert cancelled["status"] == "cancelled"
        newest = [j["id"] for j in reversed(made)]

        body = await listing(http)
        assert [j["id"] for j in body["jobs"]] == newest
        assert body["next_cursor"] is None
        # Each as `GET /v1/jobs/{id}` shows it; the light ones (in memory) too.
        assert body["jobs"][3] == cancelled
        assert body["jobs"][0] == (await http.get(f"/v1/jobs/{made[-1]['id']}")).json()
        assert {j["op"] for j in body["jobs"]} == {add, echo, quick}

        light = await listing(http, f"?op={quick}")
        assert [j["id"] for j in light["jobs"]] == [made[4]["id"], made[2]["id"]]
        only = await listing(http, f"?op={add}&status=cancelled")
        assert [j["id"] for j in only["jobs"]] == [made[3]["id"]]
        queued = await listing(http, f"?op={add}&status=queued")
        assert [j["id"] for j in queued["jobs"]] == [made[6]["id"], made[0]["id"]]
        assert (await listing(http, "?status=succeeded"))["jobs"] == []
        assert (await listing(http, "?op=no.such.op"))["jobs"] == []

        first = await listing(http, "?limit=3")
        assert [j["id"] for j in first["jobs"]] == newest[:3]
        assert isinstance(first["next_cursor"], str)
        for size in (1, 2, 3, 6, 7, 100):
            assert await every_page(http, f"?limit={size}") == newest, size
        exact = await listing(http, "?limit=7")
        assert exact["next_cursor"] is None  # no empty page after the last
        assert await every_page(http, f"?op={add}&limit=1") == [
            made[6]["id"],
            made[3]["id"],
            made[0]["id"],
        ]


async def test_bad_parameters_are_400(gateway) -> None:
    async with gateway.client() as http:
        await submit(http, gateway.op("math.add"))
        for query, names in (
            ("?limit=0", "100"),
            ("?limit=101", "100"),
            ("?limit=-1", "100"),
            ("?limit=ten", "100"),
            ("?limit=", "100"),
            ("?status=done", "queued"),
            ("?status=", "queued"),
            ("?op=", "op"),
            (f"?op={'x' * 256}", "255"),
            ("?op=a%00b", "NUL"),
            ("?cursor=", "cursor"),
            ("?cursor=not%20a%20cursor", "cursor"),
            ("?cursor=%27%20OR%201%3D1%20--", "cursor"),
            (f"?cursor={cursor_of({'created_at': 1, 'id': 'x'})}", "cursor"),
            (f"?cursor={cursor_of(['1', 'x'])}", "cursor"),
            (f"?cursor={cursor_of([1, 2])}", "cursor"),
            (f"?cursor={cursor_of([True, 'x'])}", "cursor"),
            (f"?cursor={cursor_of([1, ''])}", "cursor"),
            (f"?cursor={cursor_of([1, 'x', 3])}", "cursor"),
            (f"?cursor={cursor_of([1, 'x' + chr(0)])}", "cursor"),
            (f"?cursor={raw_cursor(LONE_SURROGATE)}", "cursor"),
            (f"?cursor={raw_cursor(b'[1e999, 1]')}", "cursor"),
            ("?cursor=" + "A" * 600, "cursor"),
        ):
            r = await http.get(f"/v1/jobs{query}")
            assert r.status_code == 400, (query, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_parameter", query
            assert names in error["message"], (query, error)
        # A well-formed position is a position, whatever its id says.
        r = await http.get(f"/v1/jobs?cursor={cursor_of([4e9, chr(39) + ' OR 1=1 --'])}")
        assert r.status_code == 200 and len(r.json()["jobs"]) == 1
        r = await http.get(f"/v1/jobs?cursor={cursor_of([1, 'x'])}")
        assert r.status_code == 200 and r.json() == {"jobs": [], "next_cursor": None}


KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}


async def test_auth_on_lists_only_the_caller_s_jobs(rabbit, tmp_path: Path) -> None:
    settings, ops = make_settings(tmp_path, rabbit.url, {"quick": contract(durability="light")})
    keys = tmp_path / "keys.json"
    keys.write_bytes(
        orjson.dumps(
            {"keys": [{"key": k, "subject": who, "scopes": ["ops:*"]} for who, k in KEYS.items()]}
        )
    )
    settings = replace(settings, auth=AuthSettings(api_keys_file=keys))
    alice, bob = bearer(KEYS["alice"]), bearer(KEYS["bob"])
    add, quick = ops["math.add"], ops["quick"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        hers = [await submit(http, op, alice) for op in (add, quick, add)]
        his = [await submit(http, op, bob) for op in (quick, add)]
        hers.append(await submit(http, add, alice))

        body = await listing(http, headers=alice)
        assert [j["id"] for j in body["jobs"]] == [j["id"] for j in reversed(hers)]
        assert all("job_token" in j for j in body["jobs"])
        assert await every_page(http, "?limit=1", headers=bob) == [j["id"] for j in reversed(his)]
        light = await listing(http, f"?op={quick}", headers=bob)
        assert [j["id"] for j in light["jobs"]] == [his[0]["id"]]
        # Alice's cursor shows bob nothing of hers: it is a position, not a permission.
        first = await listing(http, "?limit=1", headers=alice)
        rest = await listing(http, f"?cursor={first['next_cursor']}", headers=bob)
        assert {j["id"] for j in rest["jobs"]} <= {j["id"] for j in his}

        r = await http.get("/v1/jobs")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        # A job token opens its job, and lists nothing (no job id in this path: 401).
        token = hers[0]["job_token"]
        assert (await http.get(f"/v1/jobs/{hers[0]['id']}?access_token={token}")).is_success
        r = await http.get(f"/v1/jobs?access_token={token}")
        assert r.status_code == 401 and "jobs" not in r.json()
        r = await http.get("/v1/jobs", headers=bearer(token))
        assert r.status_code == 401 and "jobs" not in r.json()


def test_tokens_may_not_list_and_anonymous_lists_everyone() -> None:
    for token in (Principal(None, job_id="j1"), Principal(None, topic="news")):
        with pytest.raises(Forbidden) as refused:
            listed_owner(token)
        assert refused.value.status_code == 403
    assert listed_owner(Principal("key:alice")) == ("key:alice", False)
    assert listed_owner(Principal(None)) == (None, True)
