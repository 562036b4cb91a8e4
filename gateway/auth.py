"""Who is calling: bearer tokens (static API keys from a file, or JWTs), their scopes,
and short-lived job tokens for browsers' EventSource (which cannot send headers).

Off by default (every caller is the anonymous principal with every scope). Turned on by
giving any key source. A token never reaches a log: errors say what is wrong with a
token, never what it was.

A subject is named by where it comes from (`api_key_subject`, `jwt_subject`): API-key
subjects and each JWT issuer's `sub`s are separate namespaces, so a JWT with `sub: alice`
is not the API key whose subject is `alice`. That name is what a job's owner records.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson

from gateway.config import AuthSettings
from gateway.errors import ContractError, Forbidden, Unauthorized

ANY_OP = "ops:*"
PUBLISH, SUBSCRIBE = "topics:publish", "topics:subscribe"


def api_key_subject(subject: str) -> str:
    """The subject of an API key, as owners record it: `key:<subject in the key file>`."""
    return "key:" + subject


def jwt_subject(issuer: str, subject: str) -> str:
    """The subject of a JWT, as owners record it: `jwt:<len(iss)>:<iss>:<sub>` (`iss` is
    '' when absent). The length keeps it unambiguous: issuers are URLs, full of colons."""
    return f"jwt:{len(issuer)}:{issuer}:{subject}"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str | None
    """Who, named by the key source (`api_key_subject`, `jwt_subject`); None when auth is
    off (the anonymous principal) and for job tokens."""
    scopes: frozenset[str] = field(default_factory=frozenset)
    job_id: str | None = None
    """Set for a job token: it opens that one job, read-only, and nothing else."""
    topic: str | None = None
    """Set for a subscribe token: it opens that one topic's events, and nothing else."""

    @property
    def is_token(self) -> bool:
        """A job or subscribe token: it may read its one thing, nothing more."""
        return self.job_id is not None or self.topic is not None

    def may_submit(self, op: str) -> bool:
        return not self.is_token and (ANY_OP in self.scopes or f"ops:{op}" in self.scopes)

    def may(self, action: str, topic: str) -> bool:
        """Whether the principal may publish (`PUBLISH`) or subscribe (`SUBSCRIBE`) to a
        topic: a scope `<action>:<p>` where `p` is `*`, the topic, or a topic above it
        (a family's name covers its keys)."""
        if self.topic is not None:
            return action == SUBSCRIBE and topic == self.topic
        if self.job_id is not None:
            return False
        if f"{action}:*" in self.scopes:
            return True
        words = topic.split(".")
        return any(
            f"{action}:{'.'.join(words[:end])}" in self.scopes for end in range(len(words), 0, -1)
        )

    def require(self, action: str, topic: str) -> None:
        if not self.may(action, topic):
            raise Forbidden(f"this token has no scope to {action.split(':')[1]} to topic {topic}")

    def require_submit(self, op: str) -> None:
        if not self.may_submit(op):
            raise Forbidden(f"this token has no scope for operation {op} (needs ops:{op})")

    def may_read(self, job_id: str, owner: str | None) -> bool:
        if self.is_token:
            return self.job_id == job_id
        if self.subject is None:
            return True  # auth is off: the anonymous principal is everyone
        # With auth on, a job is its owner's only. One made while auth was off (no owner),
        # or by an older version (an owner not qualified by its source), is nobody's.
        return owner == self.subject


ANONYMOUS = Principal(subject=None, scopes=frozenset({ANY_OP, f"{PUBLISH}:*", f"{SUBSCRIBE}:*"}))


@dataclass(frozen=True, slots=True)
class ApiKey:
    sha256: bytes
    subject: str
    scopes: frozenset[str]


def load_api_keys(path: Path) -> list[ApiKey]:
    """`{"keys": [{"key" or "key_sha256": ..., "subject": ..., "scopes": [...]}]}`.
    Prefer `key_sha256` (hex): then the file holds no usable secret."""
    try:
        document = orjson.loads(path.read_bytes())
        keys = []
        for entry in document["keys"]:
            if "key_sha256" in entry:
                digest = bytes.fromhex(entry["key_sha256"])
            else:
                digest = hashlib.sha256(entry["key"].encode()).digest()
            keys.append(ApiKey(digest, str(entry["subject"]), frozenset(entry["scopes"])))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"{path}: not a valid API key file: {exc}") from exc
    return keys


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self._keys = {
            k.sha256: k
            for k in (load_api_keys(settings.api_keys_file) if settings.api_keys_file else [])
        }
        self._public_key = (
            settings.jwt_public_key_file.read_text() if settings.jwt_public_key_file else None
        )
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        secret = settings.job_token_secret or secrets.token_urlsafe(32)
        self._job_key = hashlib.sha256(b"gateway job token\0" + secret.encode()).digest()

    async def authenticate(
        self,
        authorization: str | None,
        query_token: str | None,
        job_id: str | None = None,
        topic: str | None = None,
    ) -> Principal:
        """The caller of a request. `query_token` is only accepted as a job token for
        `job_id`, or a subscribe token for `topic` (where a browser's EventSource cannot
        send an Authorization header)."""
        if not self.enabled:
            return ANONYMOUS
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("use Authorization: Bearer <token>")
            return await self._bearer(token.strip())
        if query_token and job_id:
            return self.verify_job_token(query_token, job_id)
        if query_token and topic:
            return self.verify_topic_token(query_token, topic)
        raise Unauthorized("authentication required: send Authorization: Bearer <token>")

    async def _bearer(self, token: str) -> Principal:
        key = self._keys.get(hashlib.sha256(token.encode()).digest())
        if key is not None:
            return Principal(api_key_subject(key.subject), key.scopes)
        if token.count(".") == 2 and (self.settings.jwt_secret or self._public_key or self._jwks):
            return await self._jwt(token)
        raise Unauthorized("unknown or invalid token")

    async def _jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm == "HS256" and self.settings.jwt_secret:
                key: Any = self.settings.jwt_secret
            elif algorithm in ("RS256", "ES256") and self._jwks is not None:
                # PyJWKClient fetches (and caches) with blocking I/O: keep it off the loop.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            elif algorithm in ("RS256", "ES256") and self._public_key:
                key = self._public_key
            else:
                raise Unauthorized(f"tokens signed with {algorithm!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["exp", "sub"]},
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
        # OAuth's space-separated `scope`, or a `scopes` list.
        scope = claims.get("scope")
        scope_list = scope.split() if isinstance(scope, str) else claims.get("scopes", [])
        if not isinstance(scope_list, list):
            raise Unauthorized("invalid token: scopes must be a list")
        issuer = claims.get("iss", "")
        if not isinstance(issuer, str):
            raise Unauthorized("invalid token: iss must be a string")
        return Principal(jwt_subject(issuer, str(claims["sub"])), frozenset(map(str, scope_list)))

    # -- job tokens --------------------------------------------------------------------

    def issue_job_token(self, job_id: str, now: float | None = None) -> str:
        """A token that opens one job's resource and events, read-only, for a while."""
        return self._issue(job_id, self.settings.job_token_ttl_seconds, now)[0]

    def verify_job_token(self, token: str, job_id: str) -> Principal:
        self._verify(token, job_id, "job token")
        return Principal(subject=None, job_id=job_id)

    # -- subscribe tokens ----------------------------------------------------------------

    def issue_topic_token(self, topic: str, now: float | None = None) -> tuple[str, int]:
        """A token that opens one topic's events, read-only, for a short while; and when
        it expires (epoch seconds). Signed apart from job tokens (a job id has no `:`)."""
        return self._issue(f"topic:{topic}", self.settings.topic_token_ttl_seconds, now)

    def verify_topic_token(self, token: str, topic: str) -> Principal:
        self._verify(token, f"topic:{topic}", "subscribe token")
        return Principal(subject=None, topic=topic)

    def _issue(self, thing: str, ttl: float, now: float | None) -> tuple[str, int]:
        """`<expires>.<signature of thing and expires>`, and its expiry."""
        expires = int((now or time.time()) + ttl)
        return f"{expires}.{self._sign(f'{thing}.{expires}')}", expires

    def _verify(self, token: str, thing: str, kind: str) -> None:
        expires_text, _, signature = token.partition(".")
        if not expires_text.isdigit() or not hmac.compare_digest(
            signature, self._sign(f"{thing}.{expires_text}")
        ):
            raise Unauthorized(f"invalid {kind}")
        if int(expires_text) < time.time():
            raise Unauthorized(f"the {kind} has expired")

    def _sign(self, payload: str) -> str:
        return hmac.new(self._job_key, payload.encode(), hashlib.sha256).hexdigest()
