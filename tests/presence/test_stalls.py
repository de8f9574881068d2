"""Presence and rooms on a redis-server that freezes (SIGSTOP) or restarts empty.

A private redis-server per test (the shared one is never touched). A call made
while Redis is frozen times out; whether its script ran (it did, if it was sent
on an open connection: Redis reads it when it thaws) or not (a new connection
never got past its handshake), the heartbeat makes the backend hold what the
instance holds, within the lease bound once Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from presence_support import RecordingBus

from rtkit import PresenceStore, RoomManager, redis_client
from rtkit.errors import BackendUnavailable
from rtkit.presence import Departure, PresenceCount
from rtkit.rooms import RoomDeparture
from rtkit_testing import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 0.5  # each round trip
SLACK = 3.0  # a busy CI machine


@dataclass
class Node:
    client: aioredis.Redis
    presence: PresenceStore
    rooms: RoomManager
    bus: RecordingBus

    async def warm(self) -> None:
        """Open several connections, so a call made during a freeze is sent at once."""
        await asyncio.gather(*(self.presence.is_online("nobody") for _ in range(8)))

    async def cold(self) -> None:
        """Close every pooled connection: a call made during a freeze never gets sent."""
        await self.client.connection_pool.disconnect()


@pytest.fixture
async def node(private_redis: PrivateRedis, request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    ttl = getattr(request, "param", 30.0)
    client = redis_client(private_redis.url, timeout=TIMEOUT)
    bus = RecordingBus()
    common: dict[str, Any] = {"redis": client, "ttl": ttl, "instance_id": "node-a", "bus": bus}
    made = Node(
        client,
        PresenceStore.from_url(private_redis.url, **common),
        RoomManager.from_url(private_redis.url, **common),
        bus,
    )
    await made.presence.start()
    await made.rooms.start()
    yield made
    private_redis.thaw()
    for store in (made.presence, made.rooms):
        with contextlib.suppress(BackendUnavailable):  # a test that left Redis down
            await store.close()
    await client.aclose()


async def within(seconds: float, check: Any) -> float:
    """Poll ``check()`` until true; fail after ``seconds``. Returns how long it took."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < seconds, f"not within {seconds:.1f} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_a_connect_and_a_join_that_timed_out_but_ran_are_undone(
    private_redis: PrivateRedis, node: Node
) -> None:
    await node.presence.connect("bob", "b1")
    await node.warm()
    private_redis.freeze()
    failed = await asyncio.gather(  # at once: each is sent on an open connection
        node.presence.connect("ghost", "g1", username="Ghost"),
        node.rooms.join("lobby", "ghost", "g1"),
        return_exceptions=True,
    )
    assert [type(f) for f in failed] == [BackendUnavailable, BackendUnavailable]
    private_redis.thaw()
    # Redis ran both scripts when it thawed: the ghost is there...
    await within(5, lambda: node.presence.is_online("ghost"))
    assert await node.rooms.is_member("lobby", "ghost")
    # ...until the next pass of the heartbeat (here run at once) takes it away
    assert await node.presence.purge_expired() == [Departure("ghost", "g1", offline=True)]
    assert await node.rooms.purge_expired() == [RoomDeparture("lobby", "ghost", "g1", True)]
    assert not await node.presence.is_online("ghost")
    assert await node.presence.count() == PresenceCount(1, 1)
    assert ("presence.offline", "ghost") in node.bus.names()
    # really connecting and leaving later leaves nothing behind either
    assert await node.presence.connect("ghost", "g2") is True
    assert await node.presence.disconnect("g2") == Departure("ghost", "g2", offline=True)
    assert not await node.presence.is_online("ghost")


async def test_a_disconnect_that_never_reached_redis_is_completed(
    private_redis: PrivateRedis, node: Node
) -> None:
    await node.presence.connect("ada", "a1")
    await node.rooms.join("lobby", "ada", "a1")
    await node.cold()
    private_redis.freeze()
    assert await node.rooms.leave_all("a1") == []  # unknown yet: nothing to announce now
    assert await node.presence.disconnect("a1") is None
    private_redis.thaw()
    await asyncio.sleep(0.2)
    assert await node.presence.is_online("ada")  # the scripts were never sent
    assert await node.presence.purge_expired() == [Departure("ada", "a1", offline=True)]
    assert await node.rooms.purge_expired() == [RoomDeparture("lobby", "ada", "a1", True)]
    assert not await node.presence.is_online("ada")
    assert (await node.rooms.rooms()).items == []
    assert ("presence.offline", "ada") in node.bus.names()
    assert ("rooms.left", "ada") in node.bus.names()


@pytest.mark.parametrize("node", [1.5], indirect=True)
async def test_after_a_stall_online_lists_converge_within_the_lease_bound(
    private_redis: PrivateRedis, node: Node
) -> None:
    ttl = node.presence.ttl
    await node.presence.connect("ada", "a1")
    await node.rooms.join("lobby", "ada", "a1")
    await node.presence.connect("bob", "b1")
    await node.warm()
    private_redis.freeze()
    with pytest.raises(BackendUnavailable):
        await node.presence.connect("ghost", "g1")  # sent: it runs when Redis thaws
    await node.cold()
    assert await node.rooms.leave_all("a1") == []  # never sent
    assert await node.presence.disconnect("a1") is None
    private_redis.thaw()

    async def converged() -> bool:
        users = [u.user_id for u in (await node.presence.online_users()).items]
        return users == ["bob"] and (await node.rooms.rooms()).items == []

    await within(ttl + ttl / 3 + TIMEOUT + SLACK, converged)
    await asyncio.sleep(ttl)  # and it stays so
    assert await converged()


@pytest.mark.parametrize("node", [1.5], indirect=True)
async def test_after_a_restart_that_lost_the_data_everything_is_put_back(
    private_redis: PrivateRedis, node: Node
) -> None:
    ttl = node.presence.ttl
    for i in range(50):
        await node.presence.connect(f"user-{i}", f"s{i}", username=f"User {i}")
        await node.rooms.join(f"room-{i % 5}", f"user-{i}", f"s{i}")
    before = (await node.presence.online_users()).items
    private_redis.stop()
    private_redis.start()  # empty, on the same port

    async def restored() -> bool:
        try:
            return await node.presence.count() == PresenceCount(50, 50) and (
                await node.rooms.count() == 5
            )
        except BackendUnavailable:
            return False

    await within(ttl + ttl / 3 + TIMEOUT + SLACK, restored)
    after = (await node.presence.online_users()).items
    assert [(u.user_id, u.username, u.connections) for u in after] == [
        (u.user_id, u.username, u.connections) for u in before
    ]
    assert (await node.rooms.members("room-0")).items == sorted(
        f"user-{i}" for i in range(0, 50, 5)
    )
