"""A master dies (Sentinel, and a cluster with replicas): every component finds the new one.

Each test starts its own topology (the session ones stay whole), kills the master
that serves the components, and checks within 20 s that the bus delivers again
(it resubscribed), the limiter decides on Redis again (its outage policy,
``closed`` here, denied during the gap), the registry lists the service again (its
heartbeat re-registered it), the message store answers again, and presence and rooms
list every connection and membership again (their buckets spread over every master:
the heartbeat puts back whatever the dead master's replica had not received).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from rtkit import EventBus, PresenceStore, RateLimiter, RoomManager, ServiceRegistry
from rtkit.eventbus.backends.redis import bucket_of
from rtkit.presence import PresenceCount
from rtkit.realtime import ChatMessage, MessageStore
from rtkit_topology import PrivateCluster, PrivateSentinel, RedisNode

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECOVERY = 20.0
USERS = 40  # online through presence, each in one of ROOMS rooms: on every master
ROOMS = 20


def _message(room: str, n: int) -> ChatMessage:
    return ChatMessage(
        id=f"m{n}-{uuid.uuid4().hex[:6]}",
        user_id="u1",
        username="Ada",
        message=str(n),
        type="text",
        timestamp="2026-01-01T00:00:00.000Z",
        room_id=room,
    )


class Components:
    """The bus (a subscriber and a publisher), the limiter, the registry, the store,
    presence and rooms."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.received: list[Any] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Components]:
        url, prefix = self.url, self.prefix
        async with AsyncExitStack() as stack:
            self.subscriber = await stack.enter_async_context(
                EventBus.from_url(url, prefix=prefix, ping_interval=1.0, ping_timeout=1.0)
            )
            self.publisher = await stack.enter_async_context(
                EventBus.from_url(url, prefix=prefix, publish_only=True, timeout=2.0)
            )
            self.limiter = await stack.enter_async_context(
                RateLimiter.from_url(
                    url, prefix=prefix, failure_policy="closed", retry_interval=0.2, timeout=1.0
                )
            )
            self.registry = await stack.enter_async_context(
                ServiceRegistry.from_url(url, prefix=prefix, timeout=1.0)
            )
            self.store = await stack.enter_async_context(
                MessageStore.from_url(url, prefix=prefix, timeout=1.0)
            )
            leased: dict[str, Any] = {"prefix": prefix, "timeout": 1.0, "ttl": 3.0}
            self.presence = await stack.enter_async_context(
                PresenceStore.from_url(url, instance_id="node-a", **leased)
            )
            self.rooms = await stack.enter_async_context(
                RoomManager.from_url(url, instance_id="node-a", **leased)
            )
            self.subscriber.subscribe("order.*", self._record)
            await self.subscriber.start()
            await self.registry.register("svc", host="127.0.0.1", port=8000, ttl=3)
            for i in range(USERS):
                await self.presence.connect(f"user-{i}", f"sid-{i}")
                await self.rooms.join(f"room-{i % ROOMS}", f"user-{i}", f"sid-{i}")
            yield self

    async def _record(self, event: Any) -> None:
        self.received.append(event.data)

    async def all_work(self, n: int, key: str, room: str) -> bool:
        """One round of every component; whether each answered from Redis."""
        try:
            await self.publisher.publish("order.placed", n)
            for _ in range(50):
                if n in self.received:
                    break
                await asyncio.sleep(0.02)
            decision = await self.limiter.hit(key, "100000/minute")
            found = await self.registry.discover("svc")
            await self.store.append(_message(room, n))
            history = await self.store.history(room, limit=1)
            online = await self.presence.count()
            listed = await self.presence.online_users(limit=1000)
            rooms = await self.rooms.count()
        except Exception:
            return False
        leased = (
            online == PresenceCount(USERS, USERS) and len(listed.items) == USERS and rooms == ROOMS
        )
        return (
            n in self.received and decision.allowed and len(found) == 1 and bool(history) and leased
        )

    async def recover(self, key: str, room: str) -> float:
        """Seconds until every component works again (fails the test past RECOVERY)."""
        start = time.monotonic()
        n = 1000
        while not await self.all_work(n, key, room):
            assert time.monotonic() - start < RECOVERY, "no recovery within 20 s"
            n += 1
            await asyncio.sleep(0.2)
        return time.monotonic() - start


async def test_every_component_follows_a_sentinel_failover() -> None:
    setup = PrivateSentinel(service="rtkit-failover")
    setup.start()
    try:
        components = Components(setup.url, "failover:")
        async with components.running() as c:
            assert await c.all_work(1, "k", "room")
            old = setup.master.port
            setup.master.stop()
            # the outage policy applies during the gap: closed denies
            assert not (await c.limiter.hit("k", "100000/minute")).allowed
            await c.recover("k", "room")
            assert setup.current_master_port() != old
    finally:
        setup.stop()


def _on_slot_of(prefix: str, node: RedisNode, cluster: PrivateCluster, tag: str) -> str:
    """An entity id whose ``{<prefix><tag>:<id>}`` key lives on ``node``."""
    for i in range(10_000):
        if _owner_port(cluster, key_slot(f"{{{prefix}{tag}:e{i}}}".encode())) == node.port:
            return f"e{i}"
    raise AssertionError("no entity found on that node")


_SLOT_OWNERS: dict[int, int] = {}


def _owner_port(cluster: PrivateCluster, slot: int) -> int:
    if not _SLOT_OWNERS:
        client = redis.Redis(port=cluster.masters()[0].port, decode_responses=True)
        try:
            for start, end, master, *_ in client.cluster("slots"):
                for s in range(start, end + 1):
                    _SLOT_OWNERS[s] = int(master[1])
        finally:
            client.close()
    return _SLOT_OWNERS[slot]


async def test_every_component_follows_a_cluster_failover() -> None:
    cluster = PrivateCluster()
    cluster.start()
    _SLOT_OWNERS.clear()
    try:
        prefix = "failover:"
        channel = f"{{{prefix}eventbus:{bucket_of('order.placed', 16)}}}:events"
        victim = next(
            n for n in cluster.nodes if n.port == _owner_port(cluster, key_slot(channel.encode()))
        )
        key = "user:" + _on_slot_of(prefix, victim, cluster, "ratelimit:user")
        room = _on_slot_of(prefix, victim, cluster, "messages")
        components = Components(cluster.url, prefix)
        async with components.running() as c:
            assert await c.all_work(1, key, room)
            victim.stop()
            assert not (await c.limiter.hit(key, "100000/minute")).allowed
            await c.recover(key, room)
            assert victim.port not in [n.port for n in cluster.masters()]
    finally:
        cluster.stop()


async def test_recovering_chat_follows_a_sentinel_failover() -> None:
    """With connection state recovery on, each message goes through the recovery store's
    connection of its own: after the master dies, messages flow again on the new one."""
    from realtime.realtime_support import Chat, make_server, serving

    setup = PrivateSentinel(service="rtkit-recovery-failover")
    setup.start()
    try:
        server = make_server(
            setup.url, "failover-recovery:", max_disconnection_duration=30, timeout=1.0
        )
        async with serving(server) as url:
            chat = Chat(url, server)
            try:
                alice = await chat.connect("alice", "Alice")
                bob = await chat.connect("bob", "Bob")
                await alice.client.join_room("lobby")
                await bob.client.join_room("lobby")
                await bob.client.send_message("lobby", "before")
                await alice.seen.wait_for("chat:message", lambda m: m.message == "before")
                old = setup.master.port
                setup.master.stop()
                start, n = time.monotonic(), 0
                while True:
                    assert time.monotonic() - start < RECOVERY, "no message within 20 s"
                    n += 1
                    try:
                        await bob.client.send_message("lobby", f"after {n}")
                        await alice.seen.wait_for(
                            "chat:message", lambda m, n=n: m.message == f"after {n}", timeout=1.0
                        )
                        break
                    except Exception:  # an error ack, or not delivered yet
                        await asyncio.sleep(0.2)
                assert setup.current_master_port() != old
            finally:
                await chat.close()
        await server.close()
    finally:
        setup.stop()
