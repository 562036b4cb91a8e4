"""Gateway settings: one frozen object, filled from CLI flags or environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.trust import WorkerUsers

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5673/"
DEFAULT_STORE_URL = "sqlite:///var/gateway.sqlite3"


@dataclass(frozen=True)
class AuthSettings:
    """Where bearer tokens come from (gateway/auth.py checks them). Here, not in auth.py,
    so that the `gateway` command reads its flags without the server extra (PyJWT)."""

    api_keys_file: Path | None = None
    jwt_secret: str | None = None
    """HS256 shared secret."""
    jwt_public_key_file: Path | None = None
    """RS256/ES256 public key (PEM)."""
    jwks_url: str | None = None
    """RS256 keys from a JWKS document (https URL, or file:// path)."""
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    job_token_secret: str | None = None
    """Signs job tokens; give every instance the same one. Default: random per process."""
    job_token_ttl_seconds: float = 3600.0
    topic_token_ttl_seconds: float = 600.0
    """How long a subscribe token opens its topic's events (an open stream goes on)."""

    @property
    def enabled(self) -> bool:
        return any((self.api_keys_file, self.jwt_secret, self.jwt_public_key_file, self.jwks_url))


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = DEFAULT_BROKER_URL
    contracts_dir: Path = Path("schemas/ops")
    topics_dir: Path | None = Path("schemas/topics")
    """Topic contracts (`<name>.json`); none if the folder does not exist."""
    topic_ring_messages: int = 10_000
    """Recent messages of each topic family kept in memory per process; a subscriber
    resuming from further back is caught up from the stream itself."""
    static: tuple[tuple[str, Path], ...] = ()
    """Folders of static files served at URL path prefixes (`/chat` -> examples/chat)."""
    console: bool = True
    """Serve the console (gateway/console/) at /console/."""
    store_url: str = DEFAULT_STORE_URL
    max_body_bytes: int = 1024 * 1024
    """Requests with a larger body are refused with 413."""
    max_header_bytes: int = 32 * 1024
    """Requests with larger headers (request line included) are refused with 431."""
    header_timeout_seconds: float = 10.0
    """A request's headers must arrive within this of the connection opening (or of the
    request's first byte): else 408 and closed, so slow clients cannot hold connections."""
    body_timeout_seconds: float = 30.0
    """A request's body must arrive within this of its headers: else 408 and closed."""
    keep_alive_seconds: float = 5.0
    """An idle kept-alive connection is closed after this."""
    max_answer_bytes: int = 8 * 1024 * 1024
    """A worker's answer (result, progress or error) with a larger body fails its job with
    `answer_too_large`, before the body is parsed or stored. 8 MiB: far above any JSON a
    client should take in one response or an event stream should carry (and 8x the
    request cap), yet small enough that one answer cannot balloon the gateway's memory
    (parsed JSON is several times its size) or the job store. Larger outputs belong in
    object storage, the answer carrying a link."""
    max_wait_seconds: float = 60.0
    """`?wait=N` and `Prefer: wait=N` are capped at this, so no request is held forever."""
    publish_timeout_seconds: float = 5.0
    """How long a request waits for RabbitMQ's confirm before it answers 503."""
    stall_seconds: float = 2.0
    """A confirm from RabbitMQ, or an answer from the job store, outstanding this long
    means it has stalled: requests fail at once with 503 and /readyz says not ready, until
    it answers again."""
    unconfirmed_seconds: float = 86_400.0
    """A keyed job whose request RabbitMQ never confirmed, and that no retry of its
    Idempotency-Key published, fails with `not_published` this long after it was made."""
    store_timeout_seconds: float = 5.0
    """The longest any call to the job store may take; then the request answers 503."""
    max_waiters: int = 10_000
    """Long-polls and streams one process holds at once; more are refused with 503 (and
    each client gets a share of them: `max_waiters_per_client`)."""
    sweep_interval_seconds: float = 1.0
    """How often deadlines, worker leases and retention are checked."""
    sse_ping_seconds: float = 15.0
    """Heartbeat comments on idle event streams, so proxies keep them open."""
    sse_send_timeout_seconds: float = 30.0
    """A stream whose client takes longer than this to take one event is closed (it
    resumes with Last-Event-ID): a slow client cannot make the gateway buffer."""
    sse_retry_ms: int = 2000
    """The `retry:` hint sent to EventSource clients."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API from another origin (none by default)."""
    notify_peers: bool | None = None
    """Tell other gateway instances about new events (None: when the store is shared)."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """Bearer tokens and scopes; off unless a key source is given."""
    rate_limit: str | None = None
    """Requests per client, in the `limits` notation ("100/second", "5000/hour")."""
    max_waiters_per_client: int | None = None
    """Long-polls and streams one client may hold at once; more are refused with 429.
    None (the default): a fair share, half of the `max_waiters` slots the other clients
    leave free (a lone client gets half, a second a quarter, ...), so no client can lock
    the others out. N: at most N each. 0: no per-client limit (one trusted client)."""
    workers: int = 1
    """Processes of one `gateway serve --workers N` on this machine, this one among them
    (gateway/processes.py). The waiter caps above are each process's own share."""
    siblings_dir: Path | None = None
    """Where those processes find each other (gateway/siblings.py); None when alone."""
    worker_users: WorkerUsers | None = None
    """Which broker users may answer which operations (`--worker-users`); None trusts an
    answer from any broker user, as before. See gateway/trust.py and SECURITY.md."""
