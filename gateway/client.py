"""Python client for the gateway's HTTP API, on httpx: `AsyncClient` and its blocking
twin `Client`.

    from gateway.client import Client

    with Client("http://127.0.0.1:8000") as gw:
        print(gw.call("math.add", {"a": 2, "b": 3}))        # {'sum': 5}

Jobs are plain dicts (the job resource). HTTP errors raise `GatewayError` (with
`status`, `code`, `details`, `retry_after`); a job that ends without a result raises
`JobFailed` from `call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import httpx
import orjson
from jsonschema import Draft7Validator

from gateway._sse import SSEParser
from gateway.contracts import validation_details
from gateway.types import JSON, JSONObject

__all__ = ["AsyncClient", "Client", "Event", "GatewayError", "JobFailed"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
TERMINAL_EVENTS = frozenset({"result", "error", "cancelled", "expired"})
LONG_POLL_SECONDS = 30.0


class GatewayError(Exception):
    """An HTTP error answer (or a request refused by client-side validation)."""

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


class JobFailed(Exception):
    """The job ended failed, cancelled or expired; `job["error"]` says why."""

    def __init__(self, job: JobJSON) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job['id']} {job['status']}: {error.get('message', '')}")
        self.job = job
        self.code = str(error.get("code") or job["status"])


JobJSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
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
    raise GatewayError(
        response.status_code,
        code,
        message,
        details,
        float(retry) if retry and retry.isdigit() else None,
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
    ) -> None:
        self.validate = validate
        # Waits are bounded by the server (`wait`), so reads may take that long too.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, read=LONG_POLL_SECONDS + timeout),
            transport=transport,
        )
        self._validators: dict[str, Draft7Validator] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

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
            validator = Draft7Validator(
                {"$ref": "#/definitions/request", "definitions": document["definitions"]}
            )
            self._validators[op] = validator
        if not validator.is_valid(body):
            details = validation_details(validator.iter_errors(body))
            raise GatewayError(
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
        return job

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
        `JobFailed` if the job fails, and TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            job = await self.submit(
                op, body, wait=LONG_POLL_SECONDS if on_progress is None else None, **submit_options
            )
            if job["status"] not in TERMINAL:
                after = 0
                while job["status"] not in TERMINAL:
                    page = await self._get(
                        f"/v1/jobs/{job['id']}/events", after=after, wait=LONG_POLL_SECONDS
                    )
                    for event in page["events"]:
                        if event["type"] == "progress" and on_progress is not None:
                            on_progress(event["data"])
                    after = page["next"]
                    if any(e["type"] in TERMINAL_EVENTS for e in page["events"]):
                        job = await self.job(job["id"])
            if job["status"] != "succeeded":
                raise JobFailed(job)
            return job["result"]

    # -- jobs --------------------------------------------------------------------------

    async def job(
        self, job_id: str, *, wait: float | None = None, after: int | None = None
    ) -> JobJSON:
        """The job; with `wait`, once it ends (or, with `after`, has an event past it)."""
        job: JobJSON = await self._get(f"/v1/jobs/{job_id}", wait=wait, after=after)
        return job

    async def cancel(self, job_id: str) -> JobJSON:
        response = await self._http.delete(f"/v1/jobs/{job_id}")
        _raise_for_error(response)
        job: JobJSON = response.json()
        return job

    async def events(self, job_id: str, *, after: int = 0) -> AsyncGenerator[Event, None]:
        """The job's events as they happen (SSE), from `after` on, until the terminal one.
        A dropped connection is resumed with Last-Event-ID: nothing missed or repeated."""
        cursor = after
        while True:
            headers = {"Accept": "text/event-stream"}
            if cursor:
                headers["Last-Event-ID"] = str(cursor)
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=None),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        _raise_for_error(response)
                    parser = SSEParser()
                    async for chunk in response.aiter_text():
                        for sse in parser.feed(chunk):
                            event = Event(int(sse.id), sse.event, orjson.loads(sse.data))
                            if event.seq <= cursor:
                                continue
                            cursor = event.seq
                            yield event
                            if event.type in TERMINAL_EVENTS:
                                return
                # The server ended the stream without a terminal event we saw: the job
                # ended before `after`, or was purged. Ask once more, then stop.
                job = await self.job(job_id)
                if job["status"] in TERMINAL and job["seq"] <= cursor:
                    return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await asyncio.sleep(0.5)  # then resume from `cursor`


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

    def events(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        stream = self._async.events(job_id, after=after)
        try:
            while True:
                try:
                    yield self._portal.call(stream.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(stream.aclose)


async def _make_async(base_url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, **options)
