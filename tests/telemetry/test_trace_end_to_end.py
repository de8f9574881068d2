"""One trace, end to end: a ChatClient event, the RealtimeServer, a bus handler on Redis in
another task, a RabbitMQ consumer (after one retry), a MicroService behind the gateway.

The tree the test sees is the one the observability guide shows: the guide's block is
compared with it (``RTKIT_WRITE_DOCS=1`` writes it instead).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from telemetry_support import bound_socket, serving

from rtkit import EventBus, ServiceRegistry
from rtkit.gateway import ApiGateway, Route
from rtkit.messaging import (
    Envelope,
    MessageConsumer,
    MessageProducer,
    RabbitMQService,
    RetryPolicy,
)
from rtkit.microservice import MicroService
from rtkit.realtime import ChatClient, RealtimeServer, issue_token
from rtkit.telemetry import span_tree
from rtkit.testing import unique_name, wait_until

SECRET = "telemetry-test-secret-" + "x" * 32
GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "observability.md"
BLOCK = re.compile(r"(<!-- trace:tree -->\n```text\n)(.*?)(```\n<!-- /trace:tree -->)", re.S)

EXPECTED = """\
room:join [client]
└─ room:join [server]
   └─ publish room.join.requested [producer]
      └─ process room.join.requested [consumer]
         └─ publish audit [producer]
            └─ process audit [consumer]
               └─ publish audit.delay.47ms [producer]
                  └─ process audit [consumer]  (linked to 1)
                     └─ POST /api/audit [server]
                        └─ POST [client]
                           └─ POST /audit [server]"""


async def _settled(exporter: InMemorySpanExporter, count: int) -> list[Any]:
    """The finished spans, once ``count`` of them ended (the outer ones end last)."""
    await wait_until(lambda: len(exporter.get_finished_spans()) >= count, timeout=10)
    await asyncio.sleep(0.1)  # nothing more comes
    return list(exporter.get_finished_spans())


@pytest.mark.redis
@pytest.mark.rabbitmq
async def test_one_trace_from_a_chat_event_to_a_service_behind_the_gateway(
    spans: InMemorySpanExporter, redis_url: str, redis_prefix: str, amqp_url: str
) -> None:
    queue = unique_name("audit")
    registry_url = f"memory://{unique_name('registry')}"
    audited = asyncio.Event()

    # A MicroService behind the gateway: the end of the trace.
    service_socket = bound_socket()
    service = MicroService(
        "audit-service",
        registry=ServiceRegistry.from_url(registry_url),
        port=service_socket.getsockname()[1],
    )

    async def record(request: Request) -> Response:
        audited.set()
        return JSONResponse({"recorded": (await request.json())["room"]})

    service.add_route("/audit", record, methods=["POST"])
    gateway = ApiGateway(
        ServiceRegistry.from_url(registry_url),
        routes={"/api/audit": Route("audit-service", path="/audit")},
        rate_limit=None,
    )

    # RabbitMQ: the consumer fails once, then calls the gateway, passing its context on.
    mq = RabbitMQService.from_url(amqp_url, connection_name=unique_name("trace"))
    await mq.declare_queue(queue)
    producer, consumer = MessageProducer(mq), MessageConsumer(mq)
    gateway_url = ""

    async def audit(payload: dict[str, Any], envelope: Envelope) -> None:
        if envelope.attempt == 1:
            raise RuntimeError("the audit log is busy")
        headers: dict[str, str] = {}
        propagate.inject(headers)  # what an instrumented HTTP client does
        async with httpx.AsyncClient(base_url=gateway_url) as http:
            answer = await http.post("/api/audit", json=payload, headers=headers)
            answer.raise_for_status()

    await consumer.consume(
        queue, audit, retry=RetryPolicy(max_attempts=2, initial_delay=0.05, jitter=0)
    )

    # The bus on Redis: a handler of another bus (its reader task) forwards to RabbitMQ.
    publisher = EventBus.from_url(redis_url, prefix=redis_prefix, publish_only=True)
    subscriber = EventBus.from_url(redis_url, prefix=redis_prefix)

    async def forward(event: Any) -> None:
        await producer.send(queue, event.data)

    subscriber.subscribe("room.join.requested", forward)
    await subscriber.start()

    # The chat server: its authorize_join hook announces every join on the bus.
    async def authorize(who: Any, room_id: str) -> bool:
        await publisher.publish("room.join.requested", {"room": room_id, "user": who.user_id})
        return True

    server = RealtimeServer(secret=SECRET, authorize_join=authorize)
    try:
        async with (
            serving(service, service_socket),
            serving(gateway) as gateway_address,
            serving(server) as chat_url,
        ):
            gateway_url = gateway_address
            async with ChatClient() as client:
                await client.connect(chat_url, issue_token(SECRET, "ada"))
                await client.join_room("lobby")
                async with asyncio.timeout(15):
                    await audited.wait()
                finished = await _settled(spans, 11)
    finally:
        await subscriber.close()
        await publisher.close()
        await consumer.close()
        await mq.delete_queue(queue)
        await mq.close()

    assert len({span.context.trace_id for span in finished}) == 1
    tree = span_tree(finished).replace(queue, "audit")
    assert tree == EXPECTED
    # The retried delivery is linked to the message's first publish.
    first = next(s for s in finished if s.name == f"publish {queue}")
    second = [s for s in finished if s.name == f"process {queue}"][-1]
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    _check_guide(tree)


def _check_guide(tree: str) -> None:
    text = GUIDE.read_text("utf-8")
    if os.environ.get("RTKIT_WRITE_DOCS"):
        GUIDE.write_text(BLOCK.sub(lambda m: m.group(1) + tree + "\n" + m.group(3), text))
        return
    found = BLOCK.search(text)
    assert found is not None, "the guide has no <!-- trace:tree --> block"
    assert found.group(2) == tree + "\n"
