"""`/v1/ops/{op}/stats`: an operation's live figures, for the web console — its queue's
depth and consumers as RabbitMQ says, and its recent jobs' counts and timings
(gateway/op_stats.py). For those who may submit to the operation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.access import caller
from gateway.http.ops import service_of
from gateway.http.responses import ORJSONResponse
from gateway.op_stats import OpStats


def op_stats_of(request: Request) -> OpStats:
    stats: OpStats = request.app.state.op_stats
    return stats


async def get_op_stats(request: Request) -> Response:
    service = service_of(request)
    principal = await caller(request)
    contract = service.contract(request.path_params["op"])
    principal.require_submit(contract.op)
    return ORJSONResponse(await op_stats_of(request).of(contract.op))


routes = [
    Route("/v1/ops/{op}/stats", get_op_stats, methods=["GET"]),
]
