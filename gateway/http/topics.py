"""`/v1/topics`: the topic contracts, publishing a message, subscribing to a topic (SSE or
long-poll JSON), and subscribe tokens for browsers."""

from __future__ import annotations

from contextlib import nullcontext

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import PUBLISH, SUBSCRIBE
from gateway.http.access import TOKEN_PARAM, authenticator_of, caller, client_key, limits_of
from gateway.http.ops import service_of
from gateway.http.params import read_sized_json_body, resume_point, wait_seconds
from gateway.http.responses import ORJSONResponse
from gateway.http.stream import stream_response, wants_event_stream
from gateway.topic_contracts import TopicContract, check_topic
from gateway.types import JSONObject


def describe(contract: TopicContract) -> JSONObject:
    return {
        "name": contract.name,
        "description": contract.settings.description,
        "href": f"/v1/topics/{contract.name}",
        "events": f"/v1/topics/{contract.name}/events",
        "settings": contract.settings.to_json(),
    }


async def list_topics(request: Request) -> Response:
    await caller(request)
    topics = service_of(request).topics
    return ORJSONResponse({"topics": [describe(c) for c in topics.values()]})


async def get_topic(request: Request) -> Response:
    """The contract that applies to the topic, with `x-gateway` showing every setting."""
    await caller(request)
    contract = service_of(request).topics.for_topic(request.path_params["topic"])
    return ORJSONResponse({**contract.document, "x-gateway": contract.settings.to_json()})


async def publish(request: Request) -> Response:
    service = service_of(request)
    principal = await caller(request)
    topic = request.path_params["topic"]
    contract = service.topics.for_topic(topic)
    principal.require(PUBLISH, topic)
    message, size = await read_sized_json_body(request, service.settings.max_body_bytes)
    await contract.check_message(message, size)
    message_id = await service.publish(contract, topic, message)
    return ORJSONResponse({"topic": topic, "message_id": message_id}, status_code=202)


async def get_events(request: Request) -> Response:
    service = service_of(request)
    topic = check_topic(request.path_params["topic"])
    principal = await caller(request, topic_events=topic)
    service.topics.for_topic(topic)  # 404 before anything else
    principal.require(SUBSCRIBE, topic)
    client = client_key(request, principal)
    limits = limits_of(request)
    if wants_event_stream(request):
        service.check_capacity()
        follow = await service.subscribe(topic, resume_point(request))
        return stream_response(
            service, follow, "stream of topic " + topic, limits, client, tell_position=True
        )
    wait = wait_seconds(request, service.settings.max_wait_seconds) or 0.0
    if wait:
        service.check_capacity()
    # Only a wait holds a waiter slot: reading what is there now takes none.
    with limits.waiting(client) if wait else nullcontext():
        follow = await service.subscribe(topic, resume_point(request))
        with follow:
            messages = await follow.next(wait)
            if not messages and wait:
                # Out of time: answer with what is there now, in case a notice was lost.
                messages = await follow.read()
    return ORJSONResponse({"events": [m.to_json() for m in messages], "next": follow.cursor})


async def new_token(request: Request) -> Response:
    """A subscribe token: opens this topic's events as `?access_token=`, read-only."""
    service = service_of(request)
    principal = await caller(request)
    topic = request.path_params["topic"]
    service.topics.for_topic(topic)
    principal.require(SUBSCRIBE, topic)
    token, expires = authenticator_of(request).issue_topic_token(topic)
    return ORJSONResponse(
        {
            "token": token,
            "topic": topic,
            "expires_at": expires,
            "events": f"/v1/topics/{topic}/events?{TOKEN_PARAM}={token}",
        }
    )


routes = [
    Route("/v1/topics", list_topics, methods=["GET"]),
    Route("/v1/topics/{topic}", get_topic, methods=["GET"]),
    Route("/v1/topics/{topic}", publish, methods=["POST"]),
    Route("/v1/topics/{topic}/events", get_events, methods=["GET"]),
    Route("/v1/topics/{topic}/tokens", new_token, methods=["POST"]),
]
