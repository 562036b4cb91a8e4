"""Python client for the gateway's HTTP API, on httpx: `AsyncClient` and its blocking
twin `Client`.

    from gateway.client import Client

    with Client("http://127.0.0.1:8000") as gw:
        print(gw.call("math.add", {"a": 2, "b": 3}))        # {'sum': 5}

Jobs are plain dicts (the job resource). HTTP errors raise `RequestRefused` (with
`status`, `code`, `details`, `retry_after`); a job that ends without a result raises
`JobUnsuccessful` from `call`. `events()` reconnects by itself, with backoff, and raises
`GatewayUnreachable` once the gateway has been unreachable for `reconnect_timeout` seconds.

Topic streams: `publish(topic, message)` sends a message to every subscriber of the topic;
`subscribe(topic, after=...)` yields `TopicMessage`s as they are published (SSE), and
resumes a dropped stream as `events()` does, without missing or repeating a message:

    with Client("http://127.0.0.1:8000") as gw:
        gw.publish("chat.room.42", {"from": "ann", "text": "hi"})
        for message in gw.subscribe("chat.room.42", after=0):  # everything retained
            print(message.seq, message.data)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

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

from gateway._sse import SSEEvent, SSEParser
from gateway.contracts import validation_details
from gateway.types import JSON, JSONObject

__all__ = [
    "AsyncClient",
    "Client",
    "GatewayUnreachable",
    "JobEvent",
    "JobUnsuccessful",
    "RequestRefused",
    "TopicMessage",
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
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job as the HTTP API gives it (the server's record of it is
    `gateway.jobs.Event`)."""

    seq: int
    type: str
    data: JSON


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """One message of a topic stream, as `subscribe()` yields it: `seq` is its position
    in the topic's stream (strictly increasing, not contiguous: resume after it with
    `subscribe(topic, after=seq)`), `topic` the topic subscribed to, `data` the message."""

    seq: int
    topic: str
    data: JSON


def _topic_path(topic: str) -> str:
    """`/v1/topics/<topic>`; a malformed topic stays one path segment (the gateway
    answers it with 400 `invalid_topic`)."""
    return "/v1/topics/" + quote(topic, safe="")


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
        # Topic -> the validator of its contract's `message` (`publish(validate=True)`).
        self._topic_validators: dict[str, Draft7Validator] = {}
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
        await self._refuse_invalid(
            self._validators,
            op,
            self.contract,
            "request",
            body,
            f"request does not match the contract of {op}",
        )

    async def _refuse_invalid(
        self,
        validators: dict[str, Draft7Validator],
        name: str,
        fetch: Callable[[str], Awaitable[JSONObject]],
        definition: str,
        body: JSON,
        refusal: str,
    ) -> None:
        """Raise the gateway's 422 (`invalid_request`, with its details; the message
        begins with `refusal`) if `body` does not match `definition` of the contract
        `fetch(name)` serves, fetched once per `name` and kept in `validators`."""
        validator = validators.get(name)
        if validator is None:
            validator = local_validator(await fetch(name), definition)
            validators[name] = validator
        if not validator.is_valid(body):
            details = validation_details(validator.iter_errors(body))
            raise RequestRefused(
                422,
                "invalid_request",
                f"{refusal}: {details[0]['message']}",
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
        give_up = None if timeout is None else time.monotonic() + timeout

        def poll_seconds() -> float:
            # Never ask the gateway to hold a poll past our own timeout: it would go on
            # holding it (and a waiter slot) after we have gone.
            if give_up is None:
                return LONG_POLL_SECONDS
            return max(1.0, min(LONG_POLL_SECONDS, math.ceil(give_up - time.monotonic())))

        async with asyncio.timeout(timeout):
            job = await self.submit(
                op, body, wait=poll_seconds() if on_progress is None else None, **submit_options
            )
            if job["status"] not in TERMINAL:
                after = 0
                while job["status"] not in TERMINAL:
                    page = await self._get(
                        f"/v1/jobs/{job['id']}/events",
                        after=after,
                        wait=poll_seconds(),
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

        async def ended(cursor: int | None) -> bool:
            # The server ended the stream without a terminal event we saw: the job ended
            # before `after`, or was purged. Ask once more; stop if it is over.
            with contextlib.suppress(httpx.TransportError):
                job = await self.job(job_id)
                return job["status"] in TERMINAL and job["seq"] <= (cursor or 0)
            return False

        stream = self._follow(
            f"/v1/jobs/{job_id}/events",
            after=after,
            query=lambda: self._token_query(job_id),
            ended=ended,
        )
        async with contextlib.aclosing(stream):
            async for sse in stream:
                event = JobEvent(int(sse.id), sse.event, orjson.loads(sse.data))
                yield event
                if event.type in TERMINAL_EVENTS:
                    return

    # -- topics ------------------------------------------------------------------------

    async def topics(self) -> list[JSONObject]:
        """The topic contracts the gateway serves (`name`, `description`, `href`,
        `events`, `settings`)."""
        body = await self._get("/v1/topics")
        topics: list[JSONObject] = body["topics"]
        return topics

    async def topic_contract(self, topic: str) -> JSONObject:
        """The contract document that applies to `topic` (a contract name or a key below
        one, e.g. `chat.room.42`); its `definitions.message` is every message's schema."""
        contract: JSONObject = await self._get(_topic_path(topic))
        return contract

    async def check_message(self, topic: str, message: JSON) -> None:
        """Validate `message` against the contract of `topic`, as the gateway would: raise
        `RequestRefused(422, "invalid_request", ..., details)` with the gateway's details.
        The contract is fetched once per topic, then cached."""
        await self._refuse_invalid(
            self._topic_validators,
            topic,
            self.topic_contract,
            "message",
            message,
            f"message does not match the contract of topic {topic}",
        )

    async def publish(
        self, topic: str, message: JSON, *, validate: bool | None = None
    ) -> JSONObject:
        """Publish `message` to `topic`; the gateway's 202 body (`topic`, `message_id`),
        once RabbitMQ has confirmed it. `validate`: check the message against the topic's
        contract first (`check_message`) and refuse it locally, sending nothing; default:
        the client's `validate`."""
        if self.validate if validate is None else validate:
            await self.check_message(topic, message)
        response = await self._http.post(
            _topic_path(topic),
            content=orjson.dumps(message),
            headers={"Content-Type": "application/json"},
        )
        _raise_for_error(response)
        accepted: JSONObject = response.json()
        return accepted

    async def subscribe(
        self, topic: str, *, after: int | None = None, token: str | None = None
    ) -> AsyncGenerator[TopicMessage, None]:
        """The topic's messages as they are published (SSE), in order. `after`: resume
        after that `seq` (0: every message the topic retains); None: from the next message
        published (where that is, is read at the first step with one long-poll request,
        so a stream lost before any message came resumes from there). A contract name
        (`chat.room`) gives every key of its family, a key (`chat.room.42`) that key only.
        Never ends by itself: break out of the loop. A dropped connection is resumed with
        Last-Event-ID (nothing missed or repeated), with the backoff and
        `reconnect_timeout` of `events()`. `token`: a subscribe token (`topic_token()`)
        to read with, as `?access_token=`. An unknown topic raises `RequestRefused` (404
        `unknown_topic`) at the first step."""
        path = f"{_topic_path(topic)}/events"
        query = {"access_token": token} if token is not None else {}
        if after is None:
            # Fix where "from the next message" is now (a long-poll read without `after`
            # says it: `next`), so that a connection lost before the first message also
            # resumes from there, missing nothing.
            page = await self._retrying(lambda: self._get(path, **query))
            for found in page["events"]:
                if found["type"] == "message":
                    yield TopicMessage(int(found["seq"]), topic, found["data"])
            after = int(page["next"])
        # The first position; once a message came, Last-Event-ID (which wins) resumes.
        query["after"] = str(after)
        stream = self._follow(path, after=after, query=lambda: query)
        async with contextlib.aclosing(stream):
            async for sse in stream:
                if sse.event == "message":
                    yield TopicMessage(int(sse.id), topic, orjson.loads(sse.data))

    async def topic_token(self, topic: str) -> JSONObject:
        """A short-lived subscribe token for `topic` (needs the subscribe scope): `token`,
        `topic`, `expires_at` (epoch seconds), and `events`, the URL of the topic's events
        with the token in it, for a browser's `EventSource`."""
        response = await self._http.post(f"{_topic_path(topic)}/tokens")
        _raise_for_error(response)
        token: JSONObject = response.json()
        return token

    # -- event streams -----------------------------------------------------------------

    async def _follow(
        self,
        path: str,
        *,
        after: int | None,
        query: Callable[[], dict[str, str]],
        ended: Callable[[int | None], Awaitable[bool]] | None = None,
    ) -> AsyncGenerator[SSEEvent, None]:
        """The SSE stream at `path` (events past `after`; None: the server's default
        start), kept open: a connection that drops is reopened with Last-Event-ID = the
        last event's id, and an event seen already is skipped, so each is yielded once.
        When the server ends the stream itself, `ended(last id)` says whether that is the
        end (None: never; reconnect). `query`: the query string of each (re)connection."""
        cursor = after
        while True:
            response = await self._open_stream(path, cursor, query())
            fresh = False
            try:
                parser = SSEParser()
                async for chunk in response.aiter_text():
                    for sse in parser.feed(chunk):
                        seq = int(sse.id)
                        if cursor is not None and seq <= cursor:
                            continue
                        cursor, fresh = seq, True
                        yield sse
            except httpx.TransportError:
                continue  # dropped mid-stream: reconnect, resuming from `cursor`
            finally:
                await response.aclose()
            if ended is not None and await ended(cursor):
                return
            if not fresh:
                # Ended cleanly with nothing new (e.g. a restarting gateway): do not
                # hammer it with reconnects.
                await asyncio.sleep(RECONNECT_FIRST_WAIT)

    async def _open_stream(
        self, path: str, cursor: int | None, query: dict[str, str]
    ) -> httpx.Response:
        """The event stream at `path` from past `cursor`, once the gateway answers 2xx;
        retried with backoff for up to `reconnect_timeout` seconds (see `events`)."""
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = str(cursor)
        request = self._http.build_request(
            "GET",
            path,
            headers=headers,
            params=query,
            timeout=httpx.Timeout(self._http.timeout.connect, read=None),
        )

        async def send() -> httpx.Response:
            response = await self._http.send(request, stream=True)
            if not response.is_success:
                await response.aread()
                await response.aclose()
                _raise_for_error(response)
            return response

        return await self._retrying(send)

    async def _retrying(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """`attempt()`, retried while the gateway cannot be reached or answers "come back
        soon" (429/502/503/504), backing off exponentially (0.5 s doubling to 10 s, plus
        jitter), for up to `reconnect_timeout` seconds; then `GatewayUnreachable` (or that
        last `RequestRefused`). Any other error is raised at once."""
        retrying = AsyncRetrying(
            stop=stop_before_delay(self.reconnect_timeout),
            wait=wait_exponential(multiplier=RECONNECT_FIRST_WAIT, max=RECONNECT_MAX_WAIT)
            + wait_random(0, RECONNECT_FIRST_WAIT),
            retry=retry_if_exception(_worth_retrying),
        )
        started = time.monotonic()
        try:
            async for trying in retrying:
                with trying:
                    result = await attempt()
        except RetryError as gave_up:
            last = gave_up.last_attempt.exception()
            if isinstance(last, httpx.TransportError):
                seconds = time.monotonic() - started
                raise GatewayUnreachable(str(self._http.base_url), seconds, last) from last
            assert last is not None
            raise last from None
        return result


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
    ) -> Generator[JobEvent, None, None]:
        """See `AsyncClient.events`."""
        return self._iterate(self._async.events(job_id, after=after, job_token=job_token))

    def topics(self) -> list[JSONObject]:
        return self._portal.call(self._async.topics)

    def topic_contract(self, topic: str) -> JSONObject:
        return self._portal.call(self._async.topic_contract, topic)

    def check_message(self, topic: str, message: JSON) -> None:
        """See `AsyncClient.check_message`."""
        self._portal.call(self._async.check_message, topic, message)

    def publish(self, topic: str, message: JSON, *, validate: bool | None = None) -> JSONObject:
        """See `AsyncClient.publish`."""
        return self._portal.call(lambda: self._async.publish(topic, message, validate=validate))

    def subscribe(
        self, topic: str, *, after: int | None = None, token: str | None = None
    ) -> Generator[TopicMessage, None, None]:
        """See `AsyncClient.subscribe`: never ends by itself; break out of the loop (the
        stream is closed when the generator is closed, `.close()`, or collected)."""
        return self._iterate(self._async.subscribe(topic, after=after, token=token))

    def topic_token(self, topic: str) -> JSONObject:
        """See `AsyncClient.topic_token`."""
        return self._portal.call(self._async.topic_token, topic)

    def _iterate(self, stream: AsyncGenerator[_T, None]) -> Generator[_T, None, None]:
        """`stream`, run on the client's event loop, as a blocking iterator."""
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
