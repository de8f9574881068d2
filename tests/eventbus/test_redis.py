"""What only the Redis backend has: several buses (processes) on one Redis and prefix."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit import EventBus
from rtkit.errors import ConfigurationError, ValidationError
from rtkit.eventbus import DeliveryFailure
from rtkit.eventbus.backends.redis import RedisEventBusBackend

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
        for bus in (orders, billing, elsewhere):
            await bus.start()  # started buses' first subscriptions: wait for Redis

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
        # the two events and its own barrier (not orders' barrier: it matched nothing here)
        assert billing.stats().received == 3


def events_channel(prefix: str, client: aioredis.Redis) -> str:
    """The bus's channel: ``<prefix>eventbus:db<N>:events``, N the client's database."""
    database = client.connection_pool.connection_kwargs.get("db", 0)
    return f"{prefix}eventbus:db{database}:events"


async def test_the_wire_format(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    channel = events_channel(redis_prefix, redis_client)
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
        await redis_client.publish(events_channel(redis_prefix, redis_client), "not json")
        await bus.publish("still.working")
        await received.wait(1)
        await wait_until(lambda: len(failures) == 1)
        assert failures[0].event is None and failures[0].subscription is None
        assert isinstance(failures[0].error, ValidationError)
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
    with pytest.raises(ConfigurationError, match="timeout"):
        EventBus.from_url(redis_url, timeout=0)
    for option in ("ping_interval", "ping_timeout"):
        bad: dict[str, Any] = {option: float("nan")}
        with pytest.raises(ConfigurationError, match=option):
            EventBus.from_url(redis_url, **bad)
    with pytest.raises(ConfigurationError, match=r"unknown option.*publish_timeout"):
        EventBus.from_url(redis_url, publish_timeout=1.0)  # renamed: timeout
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
        await worker.start()  # the started worker's first subscription: wait for Redis
        await web.publish("job.created", {"n": 1})
        await received.wait(1)
        assert received.data == [{"n": 1}]
        assert web.stats().received == 0


async def test_from_url_gives_each_option_to_whoever_takes_it(
    redis_url: str, redis_prefix: str
) -> None:
    failures: list[DeliveryFailure] = []
    bus = EventBus.from_url(
        redis_url,
        prefix=redis_prefix,
        timeout=1.5,  # the backend's
        ping_interval=0.7,
        ping_timeout=0.4,
        max_payload_bytes=10,  # the bus's
        on_error=failures.append,
        publish_only=True,
    )
    async with bus:
        backend = bus._backend
        assert isinstance(backend, RedisEventBusBackend)
        assert (backend._timeout, backend._ping_interval, backend._ping_timeout) == (1.5, 0.7, 0.4)
        assert backend.channel == events_channel(redis_prefix, backend._handle.client)
        assert (bus._max_payload_bytes, bus._on_error, bus._publish_only) == (
            10,
            failures.append,
            True,
        )
        with pytest.raises(rtkit.errors.PayloadTooLarge):
            await bus.publish("big", "x" * 20)


async def test_a_borrowed_client_stays_open_when_the_bus_never_started(
    redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    bus = EventBus.from_url("redis://", prefix=redis_prefix, redis=redis_client)
    await bus.close()
    assert await redis_client.ping()


async def _subscribers(client: aioredis.Redis, channel: str) -> int:
    ((_, count),) = await client.pubsub_numsub(channel)
    return int(count)


async def test_a_bus_subscribes_only_while_it_has_subscriptions(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A bus that only publishes never reads its own events back from Redis."""
    async with EventBus.from_url(redis_url, prefix=redis_prefix, ping_interval=0.2) as bus:
        channel = bus._backend.channel  # type: ignore[attr-defined]  # <prefix>eventbus:db<N>:events
        await bus.publish("nobody.listens")
        assert await _subscribers(redis_client, channel) == 0
        received = Recorder()
        subscription = bus.subscribe("news", received)
        await bus.publish("news", 1)  # waits for the subscription: received
        await received.wait(1)
        assert await _subscribers(redis_client, channel) == 1
        subscription()
        await wait_until(lambda: bus._backend._reader is None or bus._backend._reader.done())
        assert await _subscribers(redis_client, channel) == 0
        bus.subscribe("news", received)  # and again
        await bus.start()
        await redis_client.publish(channel, '{"id": "x", "name": "news", "ts": 1, "data": 2}')
        await received.wait(2)
        assert received.data == [1, 2]


async def test_events_nobody_subscribes_to_are_dropped_before_validation(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    failures: list[DeliveryFailure] = []
    async with EventBus.from_url(redis_url, prefix=redis_prefix, on_error=failures.append) as bus:
        channel = bus._backend.channel  # type: ignore[attr-defined]
        received = Recorder()
        bus.subscribe("wanted", received)
        await bus.start()
        await redis_client.publish(channel, '{"name": "unwanted", "ts": "no id"}')
        await redis_client.publish(channel, '{"name": "wanted", "ts": "no id"}')
        await bus.publish("wanted", 1)
        await received.wait(1)
        await settle(bus)
        assert len(failures) == 1  # the wanted one; the unwanted one was dropped unread
        assert failures[0].event is None and isinstance(failures[0].error, ValidationError)
        assert bus.stats().received == 2  # "wanted" and the barrier
