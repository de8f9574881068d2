"""Bursts on Redis: callers wait for a free connection, and fail clearly only past ``timeout``.

Every Redis-backed component gets its client from ``make_redis_client`` (``RedisHandle``):
its pool opens at most ``max_connections`` and queues the rest of a burst (a reconnect
storm after a restart looks the same) instead of refusing it with "Too many connections".
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rtkit import PresenceStore, RateLimiter, RoomManager, redis_client
from rtkit._core.redis import DEFAULT_MAX_CONNECTIONS
from rtkit.errors import BackendUnavailable, ConfigurationError

pytestmark = pytest.mark.redis

BURST = 600  # six times the pool


async def test_a_burst_of_presence_connects_waits_for_connections(
    redis_url: str, redis_prefix: str
) -> None:
    async with PresenceStore.from_url(redis_url, prefix=redis_prefix) as presence:
        await asyncio.gather(*(presence.connect(f"u{i}", f"s{i}") for i in range(BURST)))
        counted = await presence.count()
        assert (counted.users, counted.connections) == (BURST, BURST)
        pool: Any = presence._backend._handle.client.connection_pool  # type: ignore[attr-defined]
        assert pool.max_connections == DEFAULT_MAX_CONNECTIONS


async def test_a_burst_of_room_joins_waits_for_connections(
    redis_url: str, redis_prefix: str
) -> None:
    async with RoomManager.from_url(redis_url, prefix=redis_prefix) as rooms:
        joins = [rooms.join(f"room-{i % 50}", f"u{i}", f"s{i}") for i in range(BURST)]
        assert all(await asyncio.gather(*joins))
        assert await rooms.count() == 50


async def test_a_burst_of_rate_limited_hits_waits_for_connections(
    redis_url: str, redis_prefix: str
) -> None:
    # "closed": a hit the backend could not answer would be denied, not decided locally
    async with RateLimiter.from_url(
        redis_url, prefix=redis_prefix, failure_policy="closed"
    ) as limiter:
        decisions = await asyncio.gather(
            *(limiter.hit(f"user:{i % 7}", "86/hour") for i in range(BURST))
        )
        assert all(d.allowed for d in decisions)  # 86 hits on user:0 to user:5, 85 on user:6
        assert not (await limiter.hit("user:0", "86/hour")).allowed  # every hit was counted
        assert (await limiter.hit("user:6", "86/hour")).allowed


async def test_past_the_deadline_a_clear_backend_unavailable(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis_client(redis_url, max_connections=1, timeout=0.3)
    presence = PresenceStore.from_url(redis_url, prefix=redis_prefix, redis=client)
    pubsub = client.pubsub()
    try:
        await presence.start()
        await pubsub.subscribe(redis_prefix + "hold")  # holds the only connection
        began = time.monotonic()
        with pytest.raises(
            BackendUnavailable, match=r"no Redis connection became free within 0\.3 s"
        ):
            await presence.connect("ada", "a1")
        assert time.monotonic() - began >= 0.25  # it waited before giving up
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        assert await presence.connect("ada", "a1")  # the connection is free again
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await presence.close()
        await client.aclose()


def test_the_pool_size_is_checked() -> None:
    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(ConfigurationError):
            redis_client("redis://127.0.0.1:6379", max_connections=bad)
    with pytest.raises(ConfigurationError):
        redis_client("redis://127.0.0.1:6379", timeout=0)
