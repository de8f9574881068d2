"""What only the Redis backend has: several buses (processes) on one Redis and prefix."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit import ConfigurationError, DeliveryFailure, EventBus

from ._helpers import Recorder, settle, wait_until

pytestmark = pytest.mark.redis


async def test_every_bus_on_the_prefix_gets_each_event_once(
    redis_url: str, redis_prefix: str
) -> None:
    async with (
        EventBus.from_url(redis_url, prefix=redis_prefix) as orders,
        EventBus.from_url(redis_url, prefix=redis_prefix) as billing,
        EventBus.from_url(redis_url, prefix=redis_prefix + "other:") as elsewhere,
    ):
        at_orders, at_billing, at_elsewhere = Recorder(), Recorder(), Recorder()
        orders.subscribe("order.*", at_orders)
        billing.subscribe("order.*", at_billing)
        elsewhere.subscribe("order.*", at_elsewhere)

        await orders.publish("order.created", {"order_id": 1})
        await billing.publish("order.paid", {"order_id": 1})

        await at_orders.wait(2)
        await at_billing.wait(2)
        await settle(orders)
        await settle(billing)
        await settle(elsewhere)
        assert at_orders.names == at_billing.names == ["order.created", "order.paid"]
        assert at_orders.events[0].id == at_billing.events[0].id
        assert at_elsewhere.events == []
        assert billing.stats().received == 4  # two events and the two barriers before


async def test_the_wire_format(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    channel = f"{redis_prefix}eventbus:events"
    await pubsub.subscribe(channel)
    try:
        async with EventBus.from_url(redis_url, prefix=redis_prefix) as bus:
            event_id = await bus.publish("user.registered", {"user_id": 1})
        message: dict[str, Any] | None = None
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=5)
        envelope = json.loads(message["data"])
        assert envelope.pop("ts") > 0
        assert envelope == {"id": event_id, "name": "user.registered", "data": {"user_id": 1}}
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_garbage_on_the_channel_goes_to_the_error_hook(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    failures: list[DeliveryFailure] = []
    received = Recorder()
    async with EventBus.from_url(redis_url, prefix=redis_prefix, on_error=failures.append) as bus:
        bus.subscribe("#", received)
        await redis_client.publish(f"{redis_prefix}eventbus:events", "not json")
        await bus.publish("still.working")
        await received.wait(1)
        await wait_until(lambda: len(failures) == 1)
        assert failures[0].event is None and failures[0].subscription is None
        assert isinstance(failures[0].error, rtkit.ValidationError)
        assert bus.stats().errors == 1


async def test_a_borrowed_client_is_shared_and_not_closed(
    redis_url: str, redis_prefix: str
) -> None:
    client = rtkit.redis_client(redis_url)
    try:
        received = Recorder()
        async with EventBus.from_url("redis://", prefix=redis_prefix, redis=client) as bus:
            bus.subscribe("x", received)
            await bus.publish("x")
            await received.wait(1)
        assert await client.ping()
    finally:
        await client.aclose()


def test_configuration_errors(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        EventBus.from_url("kafka://localhost")
    with pytest.raises(ConfigurationError, match="prefix"):
        EventBus.from_url(redis_url, prefix="bad prefix")
    with pytest.raises(ConfigurationError, match="publish_timeout"):
        EventBus.from_url(redis_url, publish_timeout=0)
    with pytest.raises(ConfigurationError, match="max_payload_bytes"):
        EventBus(max_payload_bytes=0)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        EventBus.from_url(redis_url, redis=aioredis.Redis.from_url(redis_url))


async def test_a_publish_only_bus_reaches_the_other_processes(
    redis_url: str, redis_prefix: str
) -> None:
    received = Recorder()
    async with (
        EventBus.from_url(redis_url, prefix=redis_prefix) as worker,
        EventBus.from_url(redis_url, prefix=redis_prefix, publish_only=True) as web,
    ):
        worker.subscribe("job.*", received)
        await web.publish("job.created", {"n": 1})
        await received.wait(1)
        assert received.data == [{"n": 1}]
        assert web.stats().received == 0
