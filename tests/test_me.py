"""`GET /v1/me`: who the caller is and what it may do, with auth off and on (API keys,
JWTs); 401 as anywhere else without a valid key (job and subscribe tokens are none);
never the key itself."""

from __future__ import annotations

from dataclasses import replace

from jsonschema import Draft202012Validator

from gateway.config import AuthSettings
from gateway.openapi import ME
from tests.support import make_settings, serve_gateway
from tests.test_auth import HS_SECRET, KEYS, bearer, hs256, key_file

ME_SCHEMA = Draft202012Validator(ME)


async def me(http, path: str = "/v1/me", **kwargs) -> dict:
    r = await http.get(path, **kwargs)
    assert r.status_code == 200, r.text
    body = r.json()
    ME_SCHEMA.validate(body)
    return body


async def test_with_auth_off_everyone_is_anonymous(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url)
    async with serve_gateway(settings, ops) as gw, gw.client() as http:
        anonymous = {
            "auth": False,
            "subject": None,
            "scopes": ["ops:*", "topics:publish:*", "topics:subscribe:*"],
        }
        assert await me(http) == anonymous
        # Whatever is sent is not looked at.
        assert await me(http, headers=bearer("anything")) == anonymous
        assert await me(http, "/v1/me?access_token=x&job=y") == anonymous


async def test_with_auth_on(rabbit, tmp_path):
    settings, ops = make_settings(tmp_path, rabbit.url, topics={})
    auth = AuthSettings(api_keys_file=key_file(tmp_path, ops), jwt_secret=HS_SECRET)
    add = ops["math.add"]
    async with serve_gateway(replace(settings, auth=auth), ops) as gw, gw.client() as http:
        # 401, as everywhere: no token, a bad one, an unknown key.
        for headers in ({}, {"Authorization": "Basic abc"}, bearer("nope")):
            r = await http.get("/v1/me", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")

        # API keys: the subject as job owners record it, the key's scopes, sorted.
        alice = await me(http, headers=bearer(KEYS["alice"]))
        assert alice == {
            "auth": True,
            "subject": "key:alice",
            "scopes": [f"ops:{add}"],
        }
        assert (await me(http, headers=bearer(KEYS["bob"])))["scopes"] == ["ops:*"]
        # A JWT: its issuer-qualified subject and its scopes.
        carol = await me(http, headers=bearer(hs256("carol", "topics:publish:x ops:y")))
        assert carol["subject"] == "jwt:0::carol"
        assert carol["scopes"] == ["ops:y", "topics:publish:x"]
        for body in (alice, carol):
            assert KEYS["alice"] not in str(body)

        # Job and subscribe tokens open their one job or topic, and are no credentials
        # here: 401, in the query or as a bearer.
        r = await http.post(f"/v1/ops/{add}", json={"a": 1, "b": 2}, headers=bearer(KEYS["alice"]))
        job, token = r.json()["id"], r.json()["job_token"]
        topic = ops["chat.room"]
        dan = bearer(hs256("dan", f"topics:subscribe:{topic}"))
        r = await http.post(f"/v1/topics/{topic}/tokens", headers=dan)
        assert r.status_code == 200, r.text
        subscribe = r.json()["token"]
        for params, headers in (
            ({"access_token": token, "job": job}, {}),
            ({}, bearer(token)),
            ({"access_token": subscribe, "topic": topic}, {}),
            ({}, bearer(subscribe)),
        ):
            r = await http.get("/v1/me", params=params, headers=headers)
            assert r.status_code == 401, (params, r.text)
