"""Auth on: bearer tokens (API keys, HS256 and RS256/JWKS JWTs), scopes, owners, job
tokens for EventSource; per-client limits; and no secret in any log."""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import api_key_subject, jwt_subject
from gateway.config import AuthSettings
from gateway.worker import Worker
from tests.fault_support import GatewayProcess
from tests.support import free_port, make_settings, serve_gateway
from tests.test_round_trip import adder

HS_SECRET = "hs256-secret-" + "x" * 32
KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A JWKS document served on loopback, as an identity provider would."""
    jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = orjson.dumps({"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def key_file(tmp_path: Path, ops: dict[str, str]) -> Path:
    path = tmp_path / "keys.json"
    path.write_bytes(
        orjson.dumps(
            {
                "keys": [
                    {
                        "key": KEYS["alice"],
                        "subject": "alice",
                        "scopes": [f"ops:{ops['math.add']}"],
                    },
                    # Stored as a hash: the file then holds nothing a reader could use.
                    {
                        "key_sha256": hashlib.sha256(KEYS["bob"].encode()).hexdigest(),
                        "subject": "bob",
                        "scopes": ["ops:*"],
                    },
                ]
            }
        )
    )
    return path


def hs256(sub: str, scope: str, expires_in: float = 300) -> str:
    return jwt.encode(
        {"sub": sub, "scope": scope, "exp": int(time.time() + expires_in)},
        HS_SECRET,
        algorithm="HS256",
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_scopes_owners_and_job_tokens(
    rabbit, tmp_path, run_worker, rsa_key, jwks_url, caplog
):
    caplog.set_level(logging.DEBUG)
    settings, ops = make_settings(tmp_path, rabbit.url)
    auth = AuthSettings(
        api_keys_file=key_file(tmp_path, ops),
        jwt_secret=HS_SECRET,
        jwks_url=jwks_url,
        job_token_secret="job-token-secret-xyz",
    )
    settings = (
        type(settings)(**{**settings.__dict__, "auth": auth})
        if hasattr(settings, "__dict__")
        else settings
    )

    settings = replace(settings, auth=auth)
    add = ops["math.add"]
    rs256 = jwt.encode(
        {"sub": "dave", "scopes": [f"ops:{add}"], "exp": int(time.time()) + 300},
        rsa_key,
        algorithm="RS256",
        headers={"kid": "test-key"},
    )
    tokens = [*KEYS.values(), HS_SECRET, rs256, hs256("carol", f"ops:{add}")]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        await run_worker(adder(gw, rabbit.url))
        # 401: no token, a malformed header, an unknown key, a bad or expired JWT.
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            bearer("nope"),
            bearer(hs256("carol", f"ops:{add}", expires_in=-10)),
            bearer(
                jwt.encode(
                    {"sub": "x", "exp": int(time.time()) + 60},
                    "wrong-secret-" + "y" * 32,
                    algorithm="HS256",
                )
            ),
        ):
            r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await http.get("/v1/ops")).status_code == 401
        assert (await http.get("/healthz")).status_code == 200  # probes stay open

        # 403: a valid token without the operation's scope.
        r = await http.post(f"/v1/ops/{ops['echo']}", json={}, headers=bearer(KEYS["alice"]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

        # Every kind of token may submit within its scopes.
        jobs = {}
        for who, token in (
            ("alice", KEYS["alice"]),
            ("bob", KEYS["bob"]),
            ("carol", hs256("carol", f"ops:{add}")),
            ("dave", rs256),
        ):
            r = await http.post(
                f"/v1/ops/{add}?wait=10", json={"a": 1, "b": 1}, headers=bearer(token)
            )
            assert r.status_code == 200, (who, r.text)
            assert r.json()["result"] == {"sum": 2}
            jobs[who] = r.json()

        # A job is its submitter's: to anyone else it does not exist.
        alice_job = jobs["alice"]
        location = f"/v1/jobs/{alice_job['id']}"
        assert (await http.get(location, headers=bearer(KEYS["alice"]))).status_code == 200
        for path in (location, f"{location}/events", f"{location}?wait=1"):
            r = await http.get(path, headers=bearer(KEYS["bob"]))
            assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
        assert (await http.delete(location, headers=bearer(KEYS["bob"]))).status_code == 404

        # The job token opens its own job's events (for EventSource), and nothing else.
        token = alice_job["job_token"]
        async with http.stream(
            "GET",
            f"{location}/events?access_token={token}",
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            text = "".join([chunk async for chunk in stream.aiter_text()])
        assert "event: result" in text
        assert (await http.get(f"{location}?access_token={token}")).status_code == 200
        other = f"/v1/jobs/{jobs['bob']['id']}"
        assert (await http.get(f"{other}/events?access_token={token}")).status_code == 401
        assert (await http.delete(f"{location}?access_token={token}")).status_code == 401
        r = await http.post(f"/v1/ops/{add}?access_token={token}", json={"a": 1, "b": 1})
        assert r.status_code == 401
        forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
        assert (await http.get(f"{location}?access_token={forged}")).status_code == 401

        # Idempotency keys are per owner: bob's "k1" is not alice's "k1".
        first = await http.post(
            f"/v1/ops/{add}",
            json={"a": 5, "b": 5},
            headers={**bearer(KEYS["alice"]), "Idempotency-Key": "k1"},
        )
        second = await http.post(
            f"/v1/ops/{add}",
            json={"a": 5, "b": 5},
            headers={**bearer(KEYS["bob"]), "Idempotency-Key": "k1"},
        )
        assert first.json()["id"] != second.json()["id"]
    # Nothing the gateway side logged about all this contains a token or a secret (the
    # test's own HTTP client, httpx, logs its URLs: it is not the gateway).
    server_log = "\n".join(
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "gateway" in server_log  # the gateway did log, at DEBUG
    for secret in [*tokens, token, "job-token-secret-xyz"]:
        assert secret not in server_log


def test_subject_names_are_unambiguous():
    # Issuers are URLs, full of colons: the length keeps (iss, sub) pairs apart.
    assert jwt_subject("a:b", "c") != jwt_subject("a", "b:c")
    assert jwt_subject("", "alice") != api_key_subject("alice")


async def test_a_subject_is_its_key_sources_own(rabbit, tmp_path):
    """`sub: alice` in a JWT is not the API key whose subject is `alice`, nor the `alice`
    of another issuer: none reads or cancels another's jobs."""
    settings, ops = make_settings(tmp_path, rabbit.url)
    auth = AuthSettings(api_keys_file=key_file(tmp_path, ops), jwt_secret=HS_SECRET)
    add = ops["math.add"]

    def issued_by(issuer: str) -> str:
        claims = {"sub": "alice", "iss": issuer, "scope": "ops:*", "exp": int(time.time()) + 300}
        return jwt.encode(claims, HS_SECRET, algorithm="HS256")

    alices = {
        "api key": KEYS["alice"],
        "jwt": hs256("alice", "ops:*"),
        "jwt of issuer a": issued_by("https://a.example/"),
        "jwt of issuer b": issued_by("https://b.example/"),
    }
    async with serve_gateway(replace(settings, auth=auth), ops) as gw, gw.client() as http:
        jobs = {}
        for who, token in alices.items():
            r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers=bearer(token))
            assert r.status_code == 202, (who, r.text)
            jobs[who] = r.headers["location"]
        for owner, location in jobs.items():
            for who, token in alices.items():
                if who == owner:
                    continue
                for path in (location, f"{location}/events", f"{location}?wait=1"):
                    r = await http.get(path, headers=bearer(token))
                    assert r.status_code == 404, (owner, who, path, r.text)
                    assert r.json()["error"]["code"] == "job_not_found"
                r = await http.delete(location, headers=bearer(token))
                assert r.status_code == 404, (owner, who, r.text)
            # Its owner still has it, uncancelled.
            r = await http.get(location, headers=bearer(alices[owner]))
            assert r.status_code == 200 and r.json()["status"] == "queued", (owner, r.text)


async def test_jobs_made_while_auth_was_off_are_nobodys(rabbit, tmp_path):
    """A job submitted with auth off has no owner: on the same store with auth on, no
    principal may read or cancel it (404); an auth-off gateway still sees it."""
    settings, ops = make_settings(tmp_path, rabbit.url)
    add = ops["math.add"]
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(
            f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers={"Idempotency-Key": "k1"}
        )
        assert r.status_code == 202, r.text
        ownerless = r.json()["id"]
    location = f"/v1/jobs/{ownerless}"
    auth = AuthSettings(api_keys_file=key_file(tmp_path, ops), jwt_secret=HS_SECRET)
    async with serve_gateway(replace(settings, auth=auth), ops) as gw, gw.client() as http:
        for token in (*KEYS.values(), hs256("alice", "ops:*"), hs256("anyone", "ops:*")):
            for path in (location, f"{location}/events", f"{location}?wait=1"):
                r = await http.get(path, headers=bearer(token))
                assert r.status_code == 404, (path, r.text)
                assert r.json()["error"]["code"] == "job_not_found"
            assert (await http.delete(location, headers=bearer(token))).status_code == 404
        # The same Idempotency-Key, with auth on, names a job of its owner's own.
        r = await http.post(
            f"/v1/ops/{add}",
            json={"a": 1, "b": 2},
            headers={**bearer(KEYS["bob"]), "Idempotency-Key": "k1"},
        )
        assert r.status_code == 202 and r.json()["id"] != ownerless
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.get(location)
        assert r.status_code == 200 and r.json()["status"] == "queued"  # untouched


async def test_rate_and_waiter_limits_per_client(rabbit, tmp_path):
    settings, ops = make_settings(
        tmp_path, rabbit.url, rate_limit="6/minute", max_waiters_per_client=1
    )
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        r = await http.post(f"/v1/ops/{gw.op('math.add')}", json={"a": 1, "b": 2})
        location = r.headers["location"]
        async with http.stream(
            "GET", f"{location}/events", headers={"Accept": "text/event-stream"}
        ) as stream:
            lines = stream.aiter_lines()
            while await anext(lines) != "event: queued":  # the stream holds the slot now
                pass
            busy = await http.get(f"{location}?wait=5")
            assert busy.status_code == 429
            assert busy.json()["error"]["code"] == "too_many_requests"
            assert "retry-after" in busy.headers
        statuses = [(await http.get(location)).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]  # requests 4 and 5 of 6 this minute
    assert statuses[-1] == 429  # the 7th and later


async def test_no_body_in_the_debug_log(rabbit, tmp_path, run_worker):
    """`gateway serve --log-level debug` logs a great deal, but no request or answer body
    (the AMQP library's frame dumps held both)."""
    settings, ops = make_settings(tmp_path, rabbit.url)
    log = tmp_path / "gateway.log"
    process = GatewayProcess(
        free_port(), rabbit.url, settings.contracts_dir, settings.store_url, log, "debug"
    )
    marker_in, marker_out = "request-body-7f3a9c", "answer-body-51e8d2"
    worker = Worker(rabbit.url)

    @worker.operation(ops["echo"])
    async def echo(request, job):
        return {**request, "echo": marker_out}

    await process.start()
    try:
        await run_worker(worker)
        async with httpx.AsyncClient(base_url=process.url, timeout=30) as http:
            r = await http.post(f"/v1/ops/{ops['echo']}?wait=10", json={"text": marker_in})
            assert r.status_code == 200, r.text
    finally:
        await process.stop()
    text = log.read_text()
    assert "connected to RabbitMQ" in text  # the gateway did log
    assert marker_in not in text
    assert marker_out not in text
