"""Python client for the gateway's HTTP API, on httpx: `AsyncClient` and its blocking
twin `Client`.

    from gateway.client import Client

    with Client("http://127.0.0.1:8000") as gw:
        print(gw.call("math.add", {"a": 2, "b": 3}))        # {'sum': 5}

Jobs are plain dicts (the job resource). HTTP errors raise `RequestRefused` (with
`status`, `code`, `details`, `retry_after`); a job that ends without a result raises
`JobUnsuccessful` from `call`. `events()` reconnects by itself, with backoff, and raises
`GatewayUnreachable` once the gateway has been unreachable for `reconnect_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import httpx
import orjson
from jsonschema import Draft7Validator
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from gateway._sse import SSEParser
from gateway.contracts import validation_details
from gateway.types import JSON, JSONObject

__all__ = [
    "AsyncClient",
    "Client",
    "GatewayUnreachable",
    "JobEvent",
    "JobUnsuccessful",
    "RequestRefused",
]

# Their old names: each also named a server class (gateway.errors,
# gateway.jobs) or the worker's (gateway.worker), so they are kept only as deprecated
# aliases (see `__getattr__` at the end of this module).
_RENAMED = {"GatewayError": "RequestRefused", "JobFailed": "JobUnsuccessful", "Event": "JobEvent"}

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
TERMINAL_EVENTS = frozenset({"result", "error", "cancelled", "expired"})
LONG_POLL_SECONDS = 30.0
RECONNECT_TIMEOUT = 60.0
"""Default `reconnect_timeout`: how long `events()` keeps retrying an unreachable gateway."""
# Reconnect backoff: 0.5 s, doubling up to 10 s, each plus up to 0.5 s of jitter (so the
# many clients of a restarted gateway do not all come back at the same instant).
RECONNECT_FIRST_WAIT = 0.5
RECONNECT_MAX_WAIT = 10.0
# Answers that a proxy or a busy gateway gives while it (or its upstream) comes back.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class RequestRefused(Exception):
    """The gateway answered with an HTTP error (the JSON error body), or client-side
    validation refused the request before sending it. (The server's own error tree is
    `gateway.errors.GatewayError`: another thing.)"""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[JSONObject] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.retry_after = retry_after


class JobUnsuccessful(Exception):
    """The job ended failed, cancelled or expired; `job["error"]` says why. (A worker
    fails a job by raising `gateway.worker.JobFailed`: another thing.)"""

    def __init__(self, job: JobJSON) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job['id']} {job['status']}: {error.get('message', '')}")
        self.job = job
        self.code = str(error.get("code") or job["status"])


class GatewayUnreachable(ConnectionError):
    """The gateway could not be reached for `seconds` (every retry failed to connect);
    `reason` (and `__cause__`) is the last attempt's error."""

    def __init__(self, url: str, seconds: float, reason: BaseException) -> None:
        self.url, self.seconds = url, seconds
        self.reason = str(reason) or type(reason).__name__
        super().__init__(
            f"cannot reach the gateway at {url}: {self.reason} (gave up after {seconds:.1f} s)"
        )


JobJSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job as the HTTP API gives it (the server's record of it is
    `gateway.jobs.Event`)."""

    seq: int
    type: str
    data: JSON


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message, details = error["code"], error["message"], error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:500], None
    retry = response.headers.get("retry-after")
    raise RequestRefused(
        response.status_code,
        code,
        message,
        details,
        float(retry) if retry and retry.isdigit() else None,
    )


def local_validator(document: JSONObject, definition: str = "request") -> Draft7Validator:
    """A validator of one definition of a served contract (self-contained: its `$ref`s
    point into its own `definitions`); its `validation_details` are the gateway's."""
    return Draft7Validator(
        {"$ref": f"#/definitions/{definition}", "definitions": document["definitions"]}
    )


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        *,
        validate: bool = False,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
    ) -> None:
        """`reconnect_timeout`: seconds `events()` goes on retrying a gateway it cannot
        reach (backing off exponentially, with jitter) before it raises
        `GatewayUnreachable`."""
        self.validate = validate
        self.reconnect_timeout = reconnect_timeout
        # Waits are bounded by the server (`wait`), so reads may take that long too.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, read=LONG_POLL_SECONDS + timeout),
            transport=transport,
        )
        self._validators: dict[str, Draft7Validator] = {}
        # Job id -> the job token to read it with (`?access_token=`, see SECURITY.md).
        self._job_tokens: dict[str, str] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _remember(self, job: JobJSON) -> JobJSON:
        """Keep the job token that came with `job` for the job's later reads, if this
        client has no bearer token of its own (which opens them already)."""
        if isinstance(job.get("job_token"), str) and "authorization" not in self._http.headers:
            self._job_tokens[job["id"]] = job["job_token"]
        return job

    def _token_query(self, job_id: str) -> dict[str, str]:
        token = self._job_tokens.get(job_id)
        return {"access_token": token} if token is not None else {}

    async def _get(self, url: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        response = await self._http.get(url, params=query)
        _raise_for_error(response)
        return response.json()

    # -- operations --------------------------------------------------------------------

    async def ops(self) -> list[JSONObject]:
        body = await self._get("/v1/ops")
        ops: list[JSONObject] = body["ops"]
        return ops

    async def contract(self, op: str) -> JSONObject:
        contract: JSONObject = await self._get(f"/v1/ops/{op}")
        return contract

    async def check(self, op: str, body: JSON) -> None:
        """Validate `body` against the operation's request schema, as the gateway would."""
        validator = self._validators.get(op)
        if validator is None:
            document = await self.contract(op)
            validator = local_validator(document)
            self._validators[op] = validator
        if not validator.is_valid(body):
            details = validation_details(validator.iter_errors(body))
            raise RequestRefused(
                422,
                "invalid_request",
                f"request does not match the contract of {op}: {details[0]['message']}",
                details,
            )

    async def submit(
        self,
        op: str,
        body: JSON,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        deadline_seconds: float | None = None,
    ) -> JobJSON:
        """Submit a job; with `wait`, hold up to that many seconds for it to finish."""
        if self.validate:
            await self.check(op, body)
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if deadline_seconds is not None:
            headers["X-Deadline-Seconds"] = f"{deadline_seconds:g}"
        response = await self._http.post(
            f"/v1/ops/{op}",
            content=orjson.dumps(body),
            headers=headers,
            params={"wait": f"{wait:g}"} if wait else None,
        )
        _raise_for_error(response)
        job: JobJSON = response.json()
        return self._remember(job)

    async def call(
        self,
        op: str,
        body: JSON,
        *,
        timeout: float | None = None,
        on_progress: Callable[[JSON], object] | None = None,
        **submit_options: Any,
    ) -> JSON:
        """Submit and wait for the result (long-polling past the first wait); raises
        `JobUnsuccessful` if the job fails, and TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            job = await self.submit(
                op, body, wait=LONG_POLL_SECONDS if on_progress is None else None, **submit_options
            )
            if job["status"] not in TERMINAL:
                after = 0
                while job["status"] not in TERMINAL:
                    page = await self._get(
                        f"/v1/jobs/{job['id']}/events",
                        after=after,
                        wait=LONG_POLL_SECONDS,
                        **self._token_query(job["id"]),
                    )
                    for event in page["events"]:
                        if event["type"] == "progress" and on_progress is not None:
                            on_progress(event["data"])
                    after = page["next"]
                    if any(e["type"] in TERMINAL_EVENTS for e in page["events"]):
                        job = await self.job(job["id"])
            if job["status"] != "succeeded":
                raise JobUnsuccessful(job)
            return job["result"]

    # -- jobs --------------------------------------------------------------------------

    async def job(
        self,
        job_id: str,
        *,
        wait: float | None = None,
        after: int | None = None,
        job_token: str | None = None,
    ) -> JobJSON:
        """The job; with `wait`, once it ends (or, with `after`, has an event past it).
        `job_token`: read it with that token (`?access_token=`), here and in later calls
        for this job; without, the token of a job resource this client received is used
        when the client has no Authorization header."""
        if job_token is not None:
            self._job_tokens[job_id] = job_token
        job: JobJSON = await self._get(
            f"/v1/jobs/{job_id}", wait=wait, after=after, **self._token_query(job_id)
        )
        return self._remember(job)

    async def cancel(self, job_id: str) -> JobJSON:
        response = await self._http.delete(f"/v1/jobs/{job_id}")
        _raise_for_error(response)
        job: JobJSON = response.json()
        return job

    async def events(
        self, job_id: str, *, after: int = 0, job_token: str | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's events as they happen (SSE), from `after` on, until the terminal one.
        A dropped connection is resumed with Last-Event-ID: nothing missed or repeated.
        Reconnects back off exponentially (0.5 s doubling to 10 s, with jitter); after
        `reconnect_timeout` seconds of failed attempts this raises `GatewayUnreachable`
        (or, if the gateway kept answering 429/502/503/504, that `RequestRefused`).
        `job_token`: as for `job()`."""
        if job_token is not None:
            self._job_tokens[job_id] = job_token
        cursor = after
        while True:
            response = await self._open_stream(job_id, cursor)
            try:
                parser = SSEParser()
                async for chunk in response.aiter_text():
                    for sse in parser.feed(chunk):
                        event = JobEvent(int(sse.id), sse.event, orjson.loads(sse.data))
                        if event.seq <= cursor:
                            continue
                        cursor = event.seq
                        yield event
                        if event.type in TERMINAL_EVENTS:
                            return
            except httpx.TransportError:
                continue  # dropped mid-stream: reconnect, resuming from `cursor`
            finally:
                await response.aclose()
            # The server ended the stream without a terminal event we saw: the job
            # ended before `after`, or was purged. Ask once more, then stop.
            with contextlib.suppress(httpx.TransportError):
                job = await self.job(job_id)
                if job["status"] in TERMINAL and job["seq"] <= cursor:
                    return

    async def _open_stream(self, job_id: str, cursor: int) -> httpx.Response:
        """The job's event stream from past `cursor`, once the gateway answers 2xx; retried
        with backoff for up to `reconnect_timeout` seconds (see `events`)."""
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = str(cursor)
        request = self._http.build_request(
            "GET",
            f"/v1/jobs/{job_id}/events",
            headers=headers,
            params=self._token_query(job_id),
            timeout=httpx.Timeout(self._http.timeout.connect, read=None),
        )
        retrying = AsyncRetrying(
            stop=stop_before_delay(self.reconnect_timeout),
            wait=wait_exponential(multiplier=RECONNECT_FIRST_WAIT, max=RECONNECT_MAX_WAIT)
            + wait_random(0, RECONNECT_FIRST_WAIT),
            retry=retry_if_exception(_worth_retrying),
        )
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.send(request, stream=True)
                    if not response.is_success:
                        await response.aread()
                        await response.aclose()
                        _raise_for_error(response)
        except RetryError as gave_up:
            last = gave_up.last_attempt.exception()
            if isinstance(last, httpx.TransportError):
                seconds = time.monotonic() - started
                raise GatewayUnreachable(str(self._http.base_url), seconds, last) from last
            assert last is not None
            raise last from None
        return response


class Client:
    """The blocking twin of `AsyncClient`: the same verbs, run on a private event loop."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._async = self._portal.call(lambda: _make_async(base_url, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._async.aclose)
        self._portal_cm.__exit__(None, None, None)

    def ops(self) -> list[JSONObject]:
        return self._portal.call(self._async.ops)

    def contract(self, op: str) -> JSONObject:
        return self._portal.call(self._async.contract, op)

    def submit(self, op: str, body: JSON, **options: Any) -> JobJSON:
        return self._portal.call(lambda: self._async.submit(op, body, **options))

    def call(self, op: str, body: JSON, **options: Any) -> JSON:
        return self._portal.call(lambda: self._async.call(op, body, **options))

    def job(self, job_id: str, **options: Any) -> JobJSON:
        return self._portal.call(lambda: self._async.job(job_id, **options))

    def cancel(self, job_id: str) -> JobJSON:
        return self._portal.call(self._async.cancel, job_id)

    def events(
        self, job_id: str, *, after: int = 0, job_token: str | None = None
    ) -> Iterator[JobEvent]:
        stream = self._async.events(job_id, after=after, job_token=job_token)
        try:
            while True:
                try:
                    yield self._portal.call(stream.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(stream.aclose)


def _worth_retrying(error: BaseException) -> bool:
    """A connection that failed, or an answer saying "come back soon"."""
    if isinstance(error, RequestRefused):
        return error.status in RETRYABLE_STATUSES
    return isinstance(error, httpx.TransportError)


async def _make_async(base_url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, **options)


def __getattr__(name: str) -> Any:
    """The old names, still importable for a while, with a DeprecationWarning."""
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"gateway.client.{name} is now gateway.client.{new}", DeprecationWarning, stacklevel=2
    )
    return globals()[new]
