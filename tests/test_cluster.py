"""On a Redis Cluster: keys spread over the masters (presence and rooms too), the bus hears
only its buckets, the limiter pipelines per node, bursts wait for a connection (the private
three-master cluster)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import redis

from rtkit import EventBus, PresenceStore, RateLimiter, RoomManager, ServiceRegistry
from rtkit._core.redis import Keyspace, make_redis_client
from rtkit.eventbus.backends.redis import buckets_of
from rtkit.messaging import DedupStore
from rtkit.presence import PresenceCount
from rtkit.realtime import MessageStore, NotificationStore
from rtkit_topology import PrivateCluster

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


def _prefix() -> str:
    return f"cl-{uuid.uuid4().hex[:8]}:"


def _keys_per_master(cluster: PrivateCluster, prefix: str) -> dict[int, int]:
    """How many keys of ``prefix`` each master holds (both layouts)."""
    found = {}
    for node in cluster.masters():
        client = redis.Redis(port=node.port)
        try:
            keys = [*client.scan_iter(match="{" + prefix + "*", count=1000)]
            keys += [*client.scan_iter(match=prefix + "*", count=1000)]
        finally:
            client.close()
        found[node.port] = len(keys)
    return found


def test_keys_are_tagged_per_entity_with_the_prefix_inside() -> None:
    keys = Keyspace("app1:", "ratelimit")
    assert keys.entity_key("user:42", "tokens") == "{app1:ratelimit:user:42}:tokens"
    assert keys.entity_key("x") == "{app1:ratelimit:x}"
    assert keys.shared_key("names") == "{app1:ratelimit}:names"
    assert keys.pattern == "{app1:ratelimit*"
    assert keys.key("old") == "app1:{ratelimit}:old"  # the single-slot layout, still there
    assert Keyspace("app2:", "ratelimit").tag("x") != keys.tag("x")


async def test_the_components_spread_their_keys_over_every_master(
    redis_cluster: PrivateCluster,
) -> None:
    prefix = _prefix()
    url = redis_cluster.url
    async with RateLimiter.from_url(url, prefix=prefix) as limiter:
        for i in range(300):
            await limiter.hit(f"user:{i}", "10/minute")
    async with DedupStore.from_url(url, prefix=prefix) as dedup:
        for i in range(300):
            assert await dedup.claim(f"message-{i}") == "new"
    async with ServiceRegistry.from_url(url, prefix=prefix) as registry:
        for i in range(30):
            await registry.register(f"svc-{i}", host="127.0.0.1", port=8000 + i, heartbeat=False)
        assert len(await registry.services()) == 30
        per_master = _keys_per_master(redis_cluster, prefix)
    total = sum(per_master.values())
    assert total == 300 + 300 + 30 * 2 + 1  # limiter, dedup, registry (svc, meta), names
    assert all(count < 0.45 * total for count in per_master.values()), per_master


async def test_the_chat_stores_spread_over_rooms_and_users(redis_cluster: PrivateCluster) -> None:
    from rtkit.realtime import ChatMessage, Notification

    prefix = _prefix()
    stamp = "2026-01-01T00:00:00.000Z"
    async with MessageStore.from_url(redis_cluster.url, prefix=prefix) as messages:
        for i in range(60):
            message = ChatMessage(
                id=f"m{i}",
                user_id="u1",
                username="Ada",
                message="hi",
                type="text",
                timestamp=stamp,
                room_id=f"room-{i}",
            )
            await messages.append(message)
        assert len(await messages.history("room-7")) == 1
    async with NotificationStore.from_url(redis_cluster.url, prefix=prefix) as notes:
        for i in range(60):
            note = Notification(
                id=f"n{i}",
                from_user_id="u1",
                to_user_id=f"user-{i}",
                type="info",
                content="x",
                timestamp=stamp,
            )
            await notes.push(note)
        assert len(await notes.take("user-3")) == 1
    assert all(count > 0 for count in _keys_per_master(redis_cluster, prefix).values())


def test_patterns_need_only_the_buckets_of_their_first_word() -> None:
    assert len(buckets_of(["order.*", "order.#", "order.paid"], 16)) == 1
    assert len(buckets_of(["order.*", "user.*"], 16)) in (1, 2)
    assert buckets_of(["*.created"], 16) == set(range(16))
    assert buckets_of(["#"], 16) == set(range(16))
    assert buckets_of(None, 16) == set(range(16))


async def test_a_bus_subscribes_only_to_the_buckets_its_patterns_match(
    redis_cluster: PrivateCluster,
) -> None:
    prefix = _prefix()
    got: list[str] = []

    async def record(event: Any) -> None:
        got.append(event.name)

    async with (
        EventBus.from_url(redis_cluster.url, prefix=prefix) as orders,
        EventBus.from_url(redis_cluster.url, prefix=prefix) as everything,
        EventBus.from_url(redis_cluster.url, prefix=prefix, publish_only=True) as publisher,
    ):
        orders.subscribe("order.*", record)
        everything.subscribe("#", record)
        await orders.start()
        await everything.start()
        backend: Any = orders._backend
        assert backend.sharded and len(backend._requested) == 1
        assert len(everything._backend._requested) == 16  # type: ignore[attr-defined]
        await publisher.publish("order.paid", 1)
        await publisher.publish("user.joined", 2)
        for _ in range(200):
            if Counter(got) == Counter({"order.paid": 2, "user.joined": 1}):
                break
            await asyncio.sleep(0.01)
        assert Counter(got) == Counter({"order.paid": 2, "user.joined": 1})

        # a new pattern adds its bucket; the bus's own next publish waits for it
        got.clear()
        orders.subscribe("user.*", record)
        await orders.publish("user.left", 3)
        for _ in range(200):
            if Counter(got) == Counter({"user.left": 2}):
                break
            await asyncio.sleep(0.01)
        assert Counter(got) == Counter({"user.left": 2})


async def test_the_limiter_pipelines_per_master(redis_cluster: PrivateCluster) -> None:
    async with RateLimiter.from_url(redis_cluster.url, prefix=_prefix()) as limiter:
        decisions = await asyncio.gather(
            *(limiter.hit(f"k{i % 30}", "5/minute") for i in range(600))
        )
        backend: Any = limiter._backend
        assert 1 < len(backend._lanes) <= 3  # one lane per master that owns a key
        assert backend.round_trips < 200  # batched: 600 decisions, far fewer round trips
    assert sum(d.allowed for d in decisions) == 150


async def test_a_burst_on_a_cluster_waits_for_a_connection(redis_cluster: PrivateCluster) -> None:
    client: Any = make_redis_client(redis_cluster.url, max_connections=4)
    try:
        # (a burst racing the very first slot-map read trips a redis-py 8.1 race of its own)
        await client.initialize()
        await asyncio.gather(*(client.set(f"burst-{i}", i) for i in range(300)))
        values = await asyncio.gather(*(client.get(f"burst-{i}") for i in range(300)))
        assert values == [str(i) for i in range(300)]
        await asyncio.gather(*(client.delete(f"burst-{i}") for i in range(300)))
    finally:
        await client.aclose()


def _bucket_keys(cluster: PrivateCluster, prefix: str, component: str) -> dict[int, list[str]]:
    """The keys of ``component`` (spread layout) on each master, by master port."""
    found = {}
    for node in cluster.masters():
        client = redis.Redis(port=node.port, decode_responses=True)
        try:
            found[node.port] = list(client.scan_iter(match=f"{{{prefix}{component}:*", count=1000))
        finally:
            client.close()
    return found


def _users_per_master(cluster: PrivateCluster, prefix: str) -> dict[int, int]:
    """Online users (members of the buckets' ``:u`` sets) on each master."""
    found = {}
    for port, keys in _bucket_keys(cluster, prefix, "presence").items():
        client = redis.Redis(port=port)
        try:
            found[port] = sum(client.zcard(key) for key in keys if key.endswith(":u"))
        finally:
            client.close()
    return found


async def test_presence_of_10000_users_spreads_over_every_master(
    redis_cluster: PrivateCluster,
) -> None:
    prefix = _prefix()
    async with PresenceStore.from_url(redis_cluster.url, prefix=prefix) as presence:
        gate = asyncio.Semaphore(64)

        async def connect(i: int) -> None:
            async with gate:
                await presence.connect(f"user-{i}", f"sid-{i}")

        await asyncio.gather(*(connect(i) for i in range(10_000)))
        assert await presence.count() == PresenceCount(10_000, 10_000)
        keys = {
            port: len(found)
            for port, found in _bucket_keys(redis_cluster, prefix, "presence").items()
        }
        users = _users_per_master(redis_cluster, prefix)
        listed: list[str] = []
        cursor = None
        while True:  # pages merged from the 32 buckets, some asked twice
            page = await presence.online_users(cursor, limit=777)
            listed += [u.user_id for u in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert listed == sorted(f"user-{i}" for i in range(10_000))
    assert sum(users.values()) == 10_000
    for spread in (keys, users):
        total = sum(spread.values())
        assert all(0 < n < 0.45 * total for n in spread.values()), spread
    assert all(not found for found in _bucket_keys(redis_cluster, prefix, "presence").values())


async def test_rooms_spread_over_every_master(redis_cluster: PrivateCluster) -> None:
    prefix = _prefix()
    async with RoomManager.from_url(redis_cluster.url, prefix=prefix) as rooms:
        for i in range(300):
            await rooms.join(f"room-{i}", f"user-{i % 50}", f"sid-{i % 50}")
        assert await rooms.count() == 300
        assert len(await rooms.rooms_of("user-7")) == 6
        assert [r.room_id for r in (await rooms.rooms(limit=3)).items] == [
            "room-0",
            "room-1",
            "room-10",
        ]
        keys = {
            port: len(found) for port, found in _bucket_keys(redis_cluster, prefix, "rooms").items()
        }
        assert await rooms.leave_all("sid-7") == sorted(f"room-{i}" for i in range(7, 300, 50))
    total = sum(keys.values())
    assert all(0 < n < 0.45 * total for n in keys.values()), keys
