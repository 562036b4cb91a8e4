"""Who is calling, and what they may do: the bridge from a request to a `Principal`, the
per-client limits, and the job token handed out with each job when auth is on."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from gateway.auth import ANONYMOUS, Authenticator, Principal
from gateway.jobs import Job
from gateway.limits import ClientLimits
from gateway.types import JSONObject

TOKEN_PARAM = "access_token"


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


def limits_of(request: Request) -> ClientLimits:
    limits: ClientLimits = request.app.state.limits
    return limits


def client_key(request: Request, principal: Principal) -> str:
    """A client, for its limits: its subject (qualified by its key source, as owners are)
    with auth on, else its address. A job token's bearer counts as its address too: were
    it the job, one subject with many jobs would be as many clients, each with a share."""
    if principal.subject is not None:
        return "sub:" + principal.subject
    return "addr:" + address_key(request.client.host if request.client else "unknown")


def address_key(host: str) -> str:
    """An IPv4 address as it is; an IPv6 one by its /64, the block one host is given (its
    own addresses within it are free to take, so each would be another client)."""
    if ":" not in host:
        return host  # IPv4, or not an address: as it is (the parse below, per request, cost)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not isinstance(address, ipaddress.IPv6Address):
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


async def caller(request: Request, *, topic_events: str | None = None) -> Principal:
    """Authenticate the request (401 if it must and cannot) and count it against its
    client's rate (429). A token in the query is honoured only on a job's GETs (a job
    token) and on the events of the topic `topic_events` names (a subscribe token)."""
    auth = authenticator_of(request)
    if not auth.enabled:
        principal = ANONYMOUS  # what `authenticate` says, without reading the request
    else:
        job_id = request.path_params.get("job_id") if request.method == "GET" else None
        principal = await auth.authenticate(
            request.headers.get("authorization"),
            request.query_params.get(TOKEN_PARAM),
            job_id,
            topic_events,
        )
    limits = limits_of(request)
    if limits.rated:
        await limits.hit(client_key(request, principal))
    return principal


def job_json(request: Request, job: Job) -> JSONObject:
    """The job resource; with auth on, plus a token that opens this job's events where no
    Authorization header can be sent (EventSource): `?access_token=<job_token>`."""
    body = job.to_json()
    auth = authenticator_of(request)
    if auth.enabled:
        body["job_token"] = auth.issue_job_token(job.id)
    return body
