"""The `gateway` command. Every flag can also be set by the environment variable shown in
`--help`; flags win."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gateway import __version__
from gateway.config import DEFAULT_BROKER_URL, DEFAULT_STORE_URL, AuthSettings, Settings
from gateway.conform.command import conform
from gateway.errors import ContractError
from gateway.options import contracts_option
from gateway.trust import WorkerUsers

# Only the base install's modules are imported at the top: `gateway call` must work in a
# light install (client and worker only); `serve` imports the server when it runs.
SERVER_EXTRA_MISSING = (
    "gateway serve needs the server extra: pip install 'amqp-http-gateway[server]'"
)

# `gateway call` exit statuses (also in its --help and the README).
EXIT_JOB_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4

AUTH_OPTIONS = (
    "api_keys_file",
    "jwt_secret",
    "jwt_public_key_file",
    "jwks_url",
    "jwt_audience",
    "jwt_issuer",
    "job_token_secret",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="gateway")
def main() -> None:
    """HTTP gateway to RabbitMQ workers: JSON Schema contracts, RPC, long-poll and SSE."""


main.add_command(conform)


def _static(item: str) -> tuple[str, Path]:
    prefix, equals, folder = item.partition("=")
    if not equals or not prefix.startswith("/") or not Path(folder).is_dir():
        raise ValueError(f"--static {item}: give /PREFIX=FOLDER, with a folder that exists")
    return prefix, Path(folder)


@main.command()
@click.option(
    "--host",
    envvar="GATEWAY_HOST",
    default="127.0.0.1",
    show_envvar=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="GATEWAY_PORT",
    default=8000,
    type=int,
    show_envvar=True,
    help="Port to listen on.",
)
@click.option(
    "--broker",
    "broker_url",
    envvar="GATEWAY_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_envvar=True,
    help="RabbitMQ URL (amqp://user:pass@host:port/vhost).",
)
@contracts_option()
@click.option(
    "--topics",
    "topics_dir",
    envvar="GATEWAY_TOPICS",
    default="schemas/topics",
    type=click.Path(file_okay=False, path_type=Path),
    show_envvar=True,
    help="Folder of <name>.json topic contracts (none if it does not exist).",
)
@click.option(
    "--static",
    "static",
    envvar="GATEWAY_STATIC",
    multiple=True,
    show_envvar=True,
    help="Serve a folder of static files at a URL path: PREFIX=FOLDER, e.g. "
    "/chat=examples/chat (repeat the flag; in the variable, separate them with spaces).",
)
@click.option(
    "--console/--no-console",
    "console",
    envvar="GATEWAY_CONSOLE",
    default=True,
    show_envvar=True,
    help="Serve the console, a page to see and drive the gateway, at /console/.",
)
@click.option(
    "--store",
    "store_url",
    envvar="GATEWAY_STORE",
    default=DEFAULT_STORE_URL,
    show_envvar=True,
    help="Job store: sqlite:///relative/path, sqlite:////absolute/path, or "
    "postgresql://user:pass@host/db (for several instances; prefer the variable).",
)
@click.option(
    "--max-body",
    "max_body_bytes",
    envvar="GATEWAY_MAX_BODY",
    default=1024 * 1024,
    type=click.IntRange(min=1),
    show_envvar=True,
    help="Largest request body, bytes.",
)
@click.option(
    "--max-answer",
    "max_answer_bytes",
    envvar="GATEWAY_MAX_ANSWER",
    default=8 * 1024 * 1024,
    type=click.IntRange(min=1),
    show_envvar=True,
    help="Largest worker answer body, bytes; a larger one fails its job (answer_too_large).",
)
@click.option(
    "--max-header-size",
    "max_header_bytes",
    envvar="GATEWAY_MAX_HEADER_SIZE",
    default=32 * 1024,
    type=click.IntRange(min=1024),
    show_envvar=True,
    help="Largest request headers (request line included), bytes; larger get 431.",
)
@click.option(
    "--header-timeout",
    "header_timeout_seconds",
    envvar="GATEWAY_HEADER_TIMEOUT",
    default=10.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="Seconds a connection has to send a request's headers (from opening, or from the "
    "request's first byte); then 408 and closed.",
)
@click.option(
    "--body-timeout",
    "body_timeout_seconds",
    envvar="GATEWAY_BODY_TIMEOUT",
    default=30.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="Seconds a request's body has to arrive, after its headers; then 408 and closed.",
)
@click.option(
    "--keep-alive",
    "keep_alive_seconds",
    envvar="GATEWAY_KEEP_ALIVE",
    default=5.0,
    type=click.FloatRange(min=1),
    show_envvar=True,
    help="Seconds an idle kept-alive connection stays open.",
)
@click.option(
    "--max-wait",
    "max_wait_seconds",
    envvar="GATEWAY_MAX_WAIT",
    default=60.0,
    type=click.FloatRange(min=0),
    show_envvar=True,
    help="Cap on ?wait= and Prefer: wait=, seconds.",
)
@click.option(
    "--max-waiters",
    envvar="GATEWAY_MAX_WAITERS",
    default=10_000,
    type=click.IntRange(min=1),
    show_envvar=True,
    help="Long-polls and event streams held at once; more get 503.",
)
@click.option(
    "--sse-ping",
    "sse_ping_seconds",
    envvar="GATEWAY_SSE_PING",
    default=15.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="Seconds between heartbeat comments on idle event streams.",
)
@click.option(
    "--publish-timeout",
    "publish_timeout_seconds",
    envvar="GATEWAY_PUBLISH_TIMEOUT",
    default=5.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="Seconds a request waits for RabbitMQ's confirm before it answers 503.",
)
@click.option(
    "--stall-after",
    "stall_seconds",
    envvar="GATEWAY_STALL_AFTER",
    default=2.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="Seconds a confirm from RabbitMQ, or an answer from the store, may be outstanding "
    "before it counts as stalled: then requests get 503 at once and /readyz says not ready.",
)
@click.option(
    "--store-timeout",
    "store_timeout_seconds",
    envvar="GATEWAY_STORE_TIMEOUT",
    default=5.0,
    type=click.FloatRange(min=0.1),
    show_envvar=True,
    help="The longest a call to the job store may take before the request answers 503.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    envvar="GATEWAY_CORS_ORIGINS",
    multiple=True,
    show_envvar=True,
    help="A browser origin allowed to call the API (repeat the flag; in the variable, "
    "separate them with spaces).",
)
@click.option(
    "--api-keys",
    "api_keys_file",
    envvar="GATEWAY_API_KEYS",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    show_envvar=True,
    help="Turns auth on: a JSON file of API keys, their subjects and scopes (SECURITY.md).",
)
@click.option(
    "--jwt-secret",
    envvar="GATEWAY_JWT_SECRET",
    show_envvar=True,
    help="Turns auth on: accept HS256 JWTs signed with this secret (prefer the variable).",
)
@click.option(
    "--jwt-public-key",
    "jwt_public_key_file",
    envvar="GATEWAY_JWT_PUBLIC_KEY",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    show_envvar=True,
    help="Turns auth on: accept RS256/ES256 JWTs verified with this PEM public key.",
)
@click.option(
    "--jwks-url",
    envvar="GATEWAY_JWKS_URL",
    show_envvar=True,
    help="Turns auth on: accept RS256/ES256 JWTs verified with keys from this JWKS URL.",
)
@click.option(
    "--jwt-audience",
    envvar="GATEWAY_JWT_AUDIENCE",
    show_envvar=True,
    help="Required `aud` of JWTs.",
)
@click.option(
    "--jwt-issuer", envvar="GATEWAY_JWT_ISSUER", show_envvar=True, help="Required `iss` of JWTs."
)
@click.option(
    "--job-token-secret",
    envvar="GATEWAY_JOB_TOKEN_SECRET",
    show_envvar=True,
    help="Signs job tokens; give all instances the same (default: random per process).",
)
@click.option(
    "--rate-limit",
    envvar="GATEWAY_RATE_LIMIT",
    show_envvar=True,
    help='Requests per client, e.g. "100/second" or "10000/hour" (default: none).',
)
@click.option(
    "--max-waiters-per-client",
    envvar="GATEWAY_MAX_WAITERS_PER_CLIENT",
    type=click.IntRange(min=0),
    show_envvar=True,
    help="Long-polls and streams one client may hold at once; more get 429. 0: no "
    "per-client limit. Default: a fair share, half of the --max-waiters slots the other "
    "clients leave free.",
)
@click.option(
    "--worker-users",
    envvar="GATEWAY_WORKER_USERS",
    callback=lambda _ctx, _param, value: _worker_users(value),
    show_envvar=True,
    help='Which broker users may answer which operations, e.g. "math.add=worker-math '
    'report.*=worker-reports,worker-batch" (globs, first match wins; every operation must '
    "match one). Answers from other users are dropped. Default: any broker user "
    "(SECURITY.md).",
)
@click.option(
    "--workers",
    envvar="GATEWAY_WORKERS",
    default="1",
    show_envvar=True,
    callback=lambda _ctx, _param, value: _workers(value),
    help="Gateway processes sharing the port, one supervisor restarting any that dies: a "
    "number, or 0 or 'auto' for one per CPU. Any process answers for any job. The waiter "
    "caps above are for all of them together.",
)
@click.option(
    "--forwarded-allow-ips",
    envvar="GATEWAY_FORWARDED_ALLOW_IPS",
    default="127.0.0.1",
    show_envvar=True,
    help="Proxies whose X-Forwarded-For names the client (for per-client limits).",
)
@click.option(
    "--log-level",
    envvar="GATEWAY_LOG_LEVEL",
    default="info",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str,
    port: int,
    log_level: str,
    forwarded_allow_ips: str,
    workers: int | None,
    **settings: Any,
) -> None:
    """Serve the HTTP API (needs the server extra: pip install 'amqp-http-gateway[server]')."""
    try:
        import uvicorn

        from gateway.app import create_app
        from gateway.processes import configure_logging, cpu_count, serve_processes
        from gateway.server import uvicorn_config
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "gateway":
            raise  # our own bug, not a missing extra
        click.echo(SERVER_EXTRA_MISSING, err=True)
        sys.exit(2)

    configure_logging(log_level)
    server_options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # an access log would record job tokens in query strings
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips,
        "timeout_graceful_shutdown": 5,
    }
    workers = workers or cpu_count()
    try:
        auth = AuthSettings(
            **{name: settings.pop(name) for name in AUTH_OPTIONS},
        )
        settings["cors_origins"] = tuple(
            origin for value in settings["cors_origins"] for origin in value.split()
        )
        settings["static"] = tuple(
            _static(item) for value in settings["static"] for item in value.split()
        )
        gateway_settings = Settings(auth=auth, **settings)
        if workers > 1:
            sys.exit(serve_processes(gateway_settings, workers, log_level, **server_options))
        app = create_app(gateway_settings)
    except (ContractError, ValueError) as exc:
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(2)
    server = uvicorn.Server(
        uvicorn_config(app, gateway_settings, log_level=log_level, **server_options)
    )
    server.run()
    if not server.started:
        sys.exit(3)  # could not listen (the address in use, say): uvicorn said why


def _workers(value: str) -> int | None:
    """A count of processes; None for one per CPU."""
    if value.strip().lower() in ("auto", "0"):
        return None
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"a number, or 0 or 'auto', not {value!r}") from None
    if count < 0:
        raise click.BadParameter("a number, or 0 or 'auto'")
    return count


def _worker_users(value: str | None) -> WorkerUsers | None:
    if not value or not value.strip():
        return None
    try:
        return WorkerUsers.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command()
@click.argument("op")
@click.argument("body", default="{}")
@click.option(
    "--url",
    envvar="GATEWAY_URL",
    default="http://127.0.0.1:8000",
    show_envvar=True,
    help="The gateway's base URL.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (default: wait as long as it takes).",
)
@click.option(
    "--validate/--no-validate",
    default=True,
    help="Check the body against the contract before sending it.",
)
def call(op: str, body: str, url: str, timeout: float | None, validate: bool) -> None:
    """Call operation OP with the JSON BODY; show progress, print the result as JSON.

    \b
    Exit status:
      0  the job succeeded: its result on stdout
      1  the job failed, was cancelled or expired: its error on stderr
      2  the gateway refused the request (or BODY is not JSON): the error on stderr
      3  the gateway could not be reached: one line on stderr saying why
      4  --timeout ran out before the job ended (it goes on): one line on stderr
    """
    import httpx
    import orjson

    from gateway.client import Client, JobUnsuccessful, RequestRefused

    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="BODY") from None
    progress = _ProgressDisplay()
    try:
        with Client(url, validate=validate) as gateway:
            result = gateway.call(op, request, timeout=timeout, on_progress=progress.update)
    except RequestRefused as exc:
        progress.close()
        click.echo(
            orjson.dumps(
                {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
            ).decode(),
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    except JobUnsuccessful as exc:
        progress.close()
        click.echo(orjson.dumps(exc.job.get("error")).decode(), err=True)
        sys.exit(EXIT_JOB_FAILED)
    except TimeoutError:
        progress.close()
        click.echo(f"gateway: the job did not end within {timeout:g} s", err=True)
        sys.exit(EXIT_TIMEOUT)
    except httpx.TransportError as exc:
        progress.close()
        reason = str(exc) or type(exc).__name__
        click.echo(f"gateway: cannot reach the gateway at {url}: {reason}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    progress.close()
    click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


class _ProgressDisplay:
    """A bar for progress shaped `{"done": n, "total": m}`; other shapes print as lines."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._done = 0

    def update(self, data: object) -> None:
        import orjson

        done = data.get("done") if isinstance(data, dict) else None
        total = data.get("total") if isinstance(data, dict) else None
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label="progress", file=sys.stderr)
                self._bar.__enter__()
            self._bar.update(done - self._done)
            self._done = done
        else:
            click.echo(orjson.dumps(data).decode(), err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
