"""Tracing, component by component: what is traced, what travels, what is left alone."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import socketio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from telemetry_support import bound_socket, serving

from rtkit import EventBus, ServiceRegistry, telemetry
from rtkit.gateway import ApiGateway, Route
from rtkit.messaging import Envelope, MessageConsumer, MessageProducer, RabbitMQService, RetryPolicy
from rtkit.microservice import MicroService
from rtkit.realtime import ChatClient, RealtimeServer, issue_token
from rtkit.telemetry import span_tree
from rtkit.testing import unique_name, wait_until

SECRET = "tracing-test-secret-" + "x" * 32
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def by_name(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_with_nothing_configured_components_keep_their_plain_paths() -> None:
    telemetry.reset()  # tracing follows the global provider, and none is configured
    async with EventBus() as bus, RabbitMQService() as mq:
        assert bus._hooks is None and "publish" not in vars(bus)
        assert mq._telemetry is None
    server = RealtimeServer(secret=SECRET)
    async with server:
        assert server._telemetry is None
    gateway = ApiGateway(rate_limit=None)
    async with gateway:
        assert gateway._upstream is not None and gateway._upstream.hooks is None


async def test_an_in_process_event_is_published_and_processed_per_subscription(
    spans: InMemorySpanExporter,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    async def ok(event: Any) -> None:
        seen.append(event.name)

    async def broken(event: Any) -> None:
        raise RuntimeError("no")

    bus.subscribe("order.*", ok)
    bus.subscribe("#", broken)
    event_id = await bus.publish("order.created", {"id": 1})  # starts the bus: traced too
    await bus.close()
    assert seen == ["order.created"]
    assert span_tree(spans.get_finished_spans()) == (
        "publish order.created [producer]\n"
        "├─ process order.created [consumer]\n"
        "└─ process order.created [consumer]"
    )
    publish = by_name(spans, "publish order.created")[0]
    assert publish.attributes["messaging.message.id"] == event_id
    assert publish.attributes["messaging.system"] == "rtkit.eventbus"
    assert publish.attributes["messaging.operation.type"] == "send"
    ok_span, broken_span = by_name(spans, "process order.created")
    assert ok_span.attributes["messaging.destination.subscription.name"] == "order.*"
    assert ok_span.status.is_ok and not broken_span.status.is_ok
    assert bus.stats().errors == 1 and bus.stats().delivered == 1


@pytest.mark.redis
async def test_a_foreign_or_old_envelope_is_delivered_whatever_its_trace(
    spans: InMemorySpanExporter, redis_url: str, redis_prefix: str
) -> None:
    received: list[Any] = []
    async with EventBus.from_url(redis_url, prefix=redis_prefix) as bus:

        async def handler(event: Any) -> None:
            received.append(event.data)

        bus.subscribe("x.*", handler)
        await bus.start()
        channel = bus._backend.channel
        client = aioredis.Redis.from_url(redis_url)
        try:
            for i, trace in enumerate((None, 5, {"traceparent": "x" * 5000}, {"traceparent": 7})):
                envelope: dict[str, Any] = {"id": f"e{i}", "name": "x.y", "ts": 1.0, "data": i}
                if trace is not None:
                    envelope["trace"] = trace
                await client.publish(channel, json.dumps(envelope))
            await wait_until(lambda: len(received) == 4, timeout=5)
        finally:
            await client.aclose()
    assert received == [0, 1, 2, 3] and bus.stats().errors == 0
    processed = by_name(spans, "process x.y")
    assert len(processed) == 4 and all(s.parent is None for s in processed)


async def test_socketio_clients_without_or_with_a_bogus_context_still_work(
    spans: InMemorySpanExporter,
) -> None:
    server = RealtimeServer(secret=SECRET)
    async with serving(server) as url:
        plain = socketio.AsyncClient()  # as the official JS client: never sends a context
        await plain.connect(
            url, auth={"token": issue_token(SECRET, "js")}, transports=["websocket"]
        )
        try:
            assert (await plain.call("room:join", "lobby", timeout=5))["ok"] is True
            bogus = ("lobby", {"traceparent": "z" * 10_000, "tracestate": 3})
            assert (await plain.call("room:leave", bogus, timeout=5))["ok"] is True
            assert (await plain.call("room:join", ("lobby", "not a dict"), timeout=5))["ok"]
        finally:
            await plain.disconnect()
        async with ChatClient() as client:
            await client.connect(url, issue_token(SECRET, "py"))
            await client.join_room("lobby")
            with pytest.raises(Exception, match="not a member"):
                await client.send_message("elsewhere", "hi")
    joins = by_name(spans, "room:join")
    roots = [s for s in joins if s.kind.name == "SERVER" and s.parent is None]
    assert len(roots) == 2  # the two joins of the plain client start their own traces
    client_span = next(s for s in joins if s.kind.name == "CLIENT")
    child = next(s for s in joins if s.parent is not None and s.kind.name == "SERVER")
    assert child.parent.span_id == client_span.context.span_id
    failed = next(s for s in by_name(spans, "chat:message") if s.kind.name == "SERVER")
    assert failed.attributes["error.type"] == "not_member" and not failed.status.is_ok
    assert all(s.attributes.get("rtkit.connection.id") for s in joins if s.kind.name == "SERVER")


async def _echo_service(registry: ServiceRegistry, sock: Any) -> MicroService:
    service = MicroService("echo", registry=registry, port=sock.getsockname()[1])

    async def echo(request: Request) -> Response:
        return JSONResponse({k: request.headers.get(k) for k in ("traceparent", "x-request-id")})

    service.add_route("/echo", echo)
    return service


@pytest.mark.parametrize("traced", [False, True])
async def test_the_gateway_forwards_or_continues_traceparent(
    traced: bool, spans: InMemorySpanExporter
) -> None:
    if not traced:
        telemetry.disable_tracing()
    registry_url = f"memory://{unique_name('registry')}"
    sock = bound_socket()
    service = await _echo_service(ServiceRegistry.from_url(registry_url), sock)
    gateway = ApiGateway(
        ServiceRegistry.from_url(registry_url), routes={"/e": Route("echo", path="/")}
    )
    async with (
        serving(service, sock),
        serving(gateway) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        answer = await http.get("/e/echo", headers={"traceparent": TRACEPARENT})
        named = await http.get("/e/echo", headers={"x-request-id": "req-42"})
    seen = answer.json()
    assert answer.headers["x-request-id"] == seen["x-request-id"]  # made here, passed on
    assert named.json()["x-request-id"] == "req-42" == named.headers["x-request-id"]
    if not traced:
        assert seen["traceparent"] == TRACEPARENT and not spans.get_finished_spans()
        return
    assert seen["traceparent"] != TRACEPARENT
    assert seen["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]  # the same trace
    tree = span_tree(
        s
        for s in spans.get_finished_spans()
        if s.context.trace_id == int(TRACEPARENT.split("-")[1], 16)
    )
    assert tree == "GET /e [server]\n└─ GET [client]\n   └─ GET /echo [server]"


async def test_retries_and_dead_letters_keep_the_original_context(
    spans: InMemorySpanExporter,
) -> None:
    async with RabbitMQService() as mq:
        await mq.declare_queue("jobs")
        attempts: list[Envelope] = []

        async def flaky(payload: Any, envelope: Envelope) -> None:
            attempts.append(envelope)
            raise RuntimeError("always")

        consumer = MessageConsumer(mq)
        await consumer.consume("jobs", flaky, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
        await MessageProducer(mq).send("jobs", {"n": 1})
        await wait_until(lambda: mq.dead_letter_queue("jobs") and len(attempts) == 2, timeout=5)
        dead = None
        async with asyncio.timeout(5):
            while dead is None:
                dead = await mq.get("jobs.dlq")
                await asyncio.sleep(0.02)
        await consumer.close()
    publish = by_name(spans, "publish jobs")[0]
    first = publish.context
    original = f"00-{first.trace_id:032x}-{first.span_id:016x}-"
    assert attempts[1].headers["x-original-traceparent"].startswith(original)
    assert dead.headers["x-original-traceparent"].startswith(original)
    assert not dead.headers["traceparent"].startswith(original)  # its own publish
    processes = by_name(spans, "process jobs")
    assert [p.attributes["rtkit.messaging.outcome"] for p in processes] == [
        "retried",
        "dead_lettered",
    ]
    assert [p.attributes["rtkit.messaging.attempt"] for p in processes] == [1, 2]
    assert len({s.context.trace_id for s in spans.get_finished_spans() if s.parent}) == 1
    # Taking the dead letter off its queue: a receive span, linked to the dead letter's publish.
    receive = next(s for s in by_name(spans, "receive jobs.dlq") if s.links)
    dead_publish = by_name(spans, "publish jobs.dlq")[0]
    assert receive.links[0].context.span_id == dead_publish.context.span_id


async def test_without_tracing_the_headers_travel_unchanged() -> None:
    telemetry.reset()
    async with RabbitMQService() as mq:
        await mq.declare_queue("jobs")
        seen: list[Envelope] = []

        async def flaky(payload: Any, envelope: Envelope) -> None:
            seen.append(envelope)
            if envelope.attempt == 1:
                raise RuntimeError("once")

        consumer = MessageConsumer(mq)
        await consumer.consume("jobs", flaky, retry=RetryPolicy(initial_delay=0.01))
        await MessageProducer(mq).send("jobs", {}, headers={"traceparent": TRACEPARENT})
        await wait_until(lambda: len(seen) == 2, timeout=5)
        await consumer.close()
    assert [e.headers["traceparent"] for e in seen] == [TRACEPARENT, TRACEPARENT]
    assert "x-original-traceparent" not in seen[1].headers
