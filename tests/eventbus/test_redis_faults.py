"""The Redis EventBus under faults: killed connections, a dead server, a frozen server.

Only this test's own connections are killed (``CLIENT SETNAME`` + ``CLIENT KILL
ID``); whole-server faults use a private ``redis-server`` on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

import rtkit
from rtkit import EventBus
from rtkit.errors import BackendUnavailable
from rtkit_testing import PrivateRedis, free_port

from ._helpers import DEADLINE, Recorder, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
async def named_client(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    name = f"rtkit-test-bus-{uuid.uuid4().hex[:12]}"
    client = rtkit.redis_client(redis_url, client_name=name)
    yield client, name
    await client.aclose()


async def kill_connections(admin: aioredis.Redis, name: str) -> int:
    """CLIENT KILL every connection named ``name`` (and no other)."""
    killed = 0
    for info in await admin.client_list():
        if info.get("name") == name:
            await admin.execute_command("CLIENT", "KILL", "ID", info["id"])
            killed += 1
    return killed


async def publish_until_received(bus: EventBus, received: Recorder, name: str) -> None:
    """Publish ``name`` repeatedly until one arrives (pub/sub drops what is sent mid-outage)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while name not in received.names:
        assert loop.time() < end, f"{name!r} never arrived"
        with contextlib.suppress(BackendUnavailable):
            await bus.publish(name)
        await asyncio.sleep(0.1)


async def test_delivery_resumes_after_client_kill(
    redis_prefix: str,
    redis_client: aioredis.Redis,
    named_client: tuple[aioredis.Redis, str],
) -> None:
    client, name = named_client
    received = Recorder()
    async with EventBus.from_url("redis://", prefix=redis_prefix, redis=client) as bus:
        bus.subscribe("#", received)
        await bus.publish("before.kill")
        await received.wait(1)

        assert await kill_connections(redis_client, name) >= 1  # the subscription, the writer

        await publish_until_received(bus, received, "after.kill")
        await wait_until(lambda: bus.stats().reconnects >= 1)


async def test_a_publish_after_redis_dropped_the_idle_connection_goes_through(
    redis_prefix: str,
    redis_client: aioredis.Redis,
    named_client: tuple[aioredis.Redis, str],
) -> None:
    client, name = named_client
    async with EventBus.from_url(
        "redis://", prefix=redis_prefix, redis=client, publish_only=True
    ) as bus:
        await bus.publish("before.kill")
        assert await kill_connections(redis_client, name) >= 1  # the publishing one
        await asyncio.sleep(0.1)  # Redis's close reaches the idle connection
        await bus.publish("after.kill")  # on a new connection: no BackendUnavailable


async def test_start_fails_fast_when_nothing_listens() -> None:
    bus = EventBus.from_url(f"redis://127.0.0.1:{free_port()}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await bus.start()
    assert time.monotonic() - started < 5 * 1.0 + 5  # bounded, with slack for a busy CPU


async def test_publish_raises_while_redis_is_down_and_recovers_after_restart(
    private_redis: PrivateRedis,
) -> None:
    received = Recorder()
    async with EventBus.from_url(private_redis.url, timeout=1.0) as bus:
        bus.subscribe("#", received)
        await bus.publish("before")
        await received.wait(1)

        private_redis.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="publishing"):
            await bus.publish("during")
        assert time.monotonic() - started < 2 * 1.0 + 5

        private_redis.start()  # the same port: a Redis restart
        await publish_until_received(bus, received, "after")
        assert "during" not in received.names
        assert bus.stats().reconnects >= 1


async def test_a_frozen_server_is_noticed(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: connections stay open but nothing answers (a silent, dead subscription)."""
    caplog.set_level(logging.WARNING, logger="rtkit.eventbus")
    received = Recorder()
    async with EventBus.from_url(
        private_redis.url, timeout=1.0, ping_interval=0.2, ping_timeout=0.5
    ) as bus:
        bus.subscribe("#", received)
        await bus.publish("before")
        await received.wait(1)

        private_redis.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await bus.publish("frozen")  # does not hang
            assert time.monotonic() - started < 2 * 1.0 + 5
            await wait_until(lambda: "no answer to PING" in caplog.text)  # the watchdog
        finally:
            private_redis.thaw()

        await publish_until_received(bus, received, "after")
        assert bus.stats().reconnects >= 1
