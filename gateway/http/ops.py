"""`/v1/ops`: the operations, their contracts, and submitting a job."""

from __future__ import annotations

from contextlib import nullcontext

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.contracts import Contract
from gateway.errors import BadRequest
from gateway.http.access import caller, client_key, job_json, limits_of
from gateway.http.params import deadline_seconds, read_sized_json_body, wait_seconds
from gateway.http.responses import ORJSONResponse
from gateway.service import GatewayService
from gateway.trace_context import TraceContext
from gateway.types import JSONObject
from gateway.wire import HEADER_TRACEPARENT, HEADER_TRACESTATE

MAX_IDEMPOTENCY_KEY = 255


def service_of(request: Request) -> GatewayService:
    service: GatewayService = request.app.state.service
    return service


def describe(contract: Contract) -> JSONObject:
    return {
        "op": contract.op,
        "description": contract.settings.description,
        "href": f"/v1/ops/{contract.op}",
        "settings": contract.settings.to_json(),
    }


async def list_ops(request: Request) -> Response:
    service = service_of(request)
    await caller(request)
    return ORJSONResponse({"ops": [describe(c) for c in service.contracts.values()]})


async def get_op(request: Request) -> Response:
    """The contract file, with `x-gateway` showing every setting in force."""
    await caller(request)
    contract = service_of(request).contract(request.path_params["op"])
    return ORJSONResponse({**contract.document, "x-gateway": contract.settings.to_json()})


async def submit(request: Request) -> Response:
    service = service_of(request)
    settings = service.settings
    principal = await caller(request)
    contract = service.contract(request.path_params["op"])
    principal.require_submit(contract.op)
    wait = wait_seconds(request, settings.max_wait_seconds, prefer=True)
    deadline = deadline_seconds(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            code="invalid_parameter",
        )
    body, size = await read_sized_json_body(request, settings.max_body_bytes)
    await contract.check_request(body, size)
    if wait:
        service.check_capacity()
    telemetry = service.telemetry
    client_trace = TraceContext.parse(
        request.headers.get(HEADER_TRACEPARENT), request.headers.get(HEADER_TRACESTATE)
    )
    # A wait takes its slot before the job is made: a 429 or 503 after it would leave a job
    # whose id the client never learns.
    with (
        limits_of(request).waiting(client_key(request, principal)) if wait else nullcontext(),
        telemetry.serving("POST /v1/ops/{op}", client_trace) as trace,
    ):
        with telemetry.publishing(contract.op, trace) as (sent, span):
            job = await service.submit(
                contract, body, key, deadline, owner=principal.subject, trace=sent
            )
            telemetry.name_job(span, job)
        if wait:
            job = await service.wait_for_job(job.id, wait)
            telemetry.delivered(job)
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if wait and "wait" not in request.query_params:
        headers["Preference-Applied"] = f"wait={wait:g}"
    return ORJSONResponse(
        job_json(request, job), status_code=200 if job.terminal else 202, headers=headers
    )


routes = [
    Route("/v1/ops", list_ops, methods=["GET"]),
    Route("/v1/ops/{op}", get_op, methods=["GET"]),
    Route("/v1/ops/{op}", submit, methods=["POST"]),
]
