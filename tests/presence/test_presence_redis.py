"""Redis specifics: key hygiene, round trips, server time, and a SIGKILLed process."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from presence_support import RecordingBus, stop_heartbeat
from redis.asyncio.connection import Connection

from rtkit import ManualClock, redis_client
from rtkit._core.leases import spread_tags
from rtkit._core.redis import Keyspace
from rtkit.errors import BackendUnavailable, ValidationError
from rtkit.presence import Departure, PresenceCount, PresenceStore
from rtkit.rooms import RoomManager

pytestmark = pytest.mark.redis


async def keys_under(client: aioredis.Redis, prefix: str) -> list[str]:
    found = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    found += [k async for k in client.scan_iter(match="{" + prefix + "*", count=1000)]
    return sorted(found)


async def test_no_key_is_left_behind(redis_url: str, redis_prefix: str, redis_client: Any) -> None:
    presence = PresenceStore.from_url(redis_url, prefix=redis_prefix, instance_id="node-a")
    rooms = RoomManager.from_url(redis_url, prefix=redis_prefix, instance_id="node-a")
    for i in range(5):
        await presence.connect(f"user-{i}", f"sid-{i}", username=f"User {i}", meta={"i": i})
        await presence.connect(f"user-{i}", f"sid-{i}b")
        await rooms.join("lobby", f"user-{i}", f"sid-{i}")
        await rooms.join(f"room-{i}", f"user-{i}", f"sid-{i}b")
    for i in range(5):
        await presence.disconnect(f"sid-{i}")
        await presence.disconnect(f"sid-{i}b")
        await rooms.leave_all(f"sid-{i}")
        await rooms.leave(f"room-{i}", f"sid-{i}b")
    # only the instance's leases remain while the instance lives (one per bucket)
    assert await keys_under(redis_client, redis_prefix) == sorted(
        Keyspace(redis_prefix, component).entity_key(entity, "l")
        for component in ("presence", "rooms")
        for entity in spread_tags(Keyspace(redis_prefix, component))
    )
    await presence.close()
    await rooms.close()
    assert await keys_under(redis_client, redis_prefix) == []


class CountingConnection(Connection):
    """Counts the commands (round trips, as nothing is pipelined) sent to Redis."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def test_one_round_trip_per_transition(redis_url: str, redis_prefix: str) -> None:
    client = redis_client(redis_url, connection_class=CountingConnection)
    presence = PresenceStore.from_url(redis_url, prefix=redis_prefix, redis=client)
    rooms = RoomManager.from_url(redis_url, prefix=redis_prefix, redis=client)
    try:
        await presence.connect("warm", "up")  # loads the script once
        await rooms.join("warm", "warm", "up")
        for step in (
            lambda: presence.connect("ada", "a1", username="Ada"),
            lambda: presence.disconnect("a1"),
            lambda: rooms.join("lobby", "ada", "a1"),
            lambda: rooms.leave("lobby", "a1"),
            lambda: rooms.leave_all("up"),
            lambda: presence.online_users(),
            lambda: presence.count(),
            lambda: rooms.rooms(),
        ):
            before = CountingConnection.sent
            await step()
            assert CountingConnection.sent - before == 1
    finally:
        await presence.close()
        await rooms.close()
        assert await client.ping()  # a borrowed client stays open
        await client.aclose()


async def test_without_a_clock_redis_server_time_is_used(redis_url: str, redis_prefix: str) -> None:
    async with PresenceStore.from_url(redis_url, prefix=redis_prefix) as presence:
        await presence.connect("ada", "a1")
        (user,) = (await presence.online_users()).items
        assert abs(user.joined_at - time.time()) < 60


async def test_an_unreachable_redis_raises_backend_unavailable() -> None:
    presence = PresenceStore.from_url("redis://127.0.0.1:1")
    rooms = RoomManager.from_url("redis://127.0.0.1:1")
    with pytest.raises(BackendUnavailable):
        await presence.connect("ada", "a1")
    with pytest.raises(BackendUnavailable):
        await rooms.rooms()
    with pytest.raises(BackendUnavailable):
        await rooms.start()
    await presence.close()  # never started: nothing to purge, the client is closed
    await rooms.close()


async def test_two_instances_purge_a_crashed_one_with_the_manual_clock(
    redis_url: str, redis_prefix: str
) -> None:
    clock = ManualClock()
    kwargs: dict[str, Any] = {"prefix": redis_prefix, "ttl": 30.0, "clock": clock}
    a = PresenceStore.from_url(redis_url, instance_id="a", **kwargs)
    b = PresenceStore.from_url(redis_url, instance_id="b", **kwargs)
    try:
        for i in range(1200):  # more than one purge batch
            await b.connect(f"user-{i % 700}", f"sid-{i}")
        await stop_heartbeat(b)
        await a.connect("ada", "a1")
        assert await a.count() == PresenceCount(701, 1201)
        clock.advance(30)
        departures = await a.purge_expired()
        assert len(departures) == 1200
        assert sum(d.offline for d in departures) == 700
        assert await a.count() == PresenceCount(1, 1)
    finally:
        await a.close()
        await b.close()


async def test_uuid_user_ids_take_19_bytes_in_the_index_and_read_back_the_same(
    redis_url: str, redis_prefix: str, redis_client: Any
) -> None:
    clock = ManualClock()
    kwargs: dict[str, Any] = {"prefix": redis_prefix, "ttl": 30.0, "clock": clock}
    a = PresenceStore.from_url(redis_url, instance_id="a", **kwargs)
    b = PresenceStore.from_url(redis_url, instance_id="b", **kwargs)
    rng = random.Random(7)
    packed = [
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        *(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(60)),
    ]
    raw = ["0190A3C4-5B6D-7E8F-9A0B-1C2D3E4F5A6B", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6bb"]
    users = packed + raw
    try:
        for i, user_id in enumerate(users):
            assert await b.connect(user_id, f"sid-{i}", username=f"User {i}")
        stored = [
            value
            for key in await keys_under(redis_client, redis_prefix)
            if ":i:" in key
            for value in (await redis_client.hgetall(key)).values()
        ]
        assert sorted(len(value) for value in stored) == [19] * len(packed) + [36, 37]
        held: dict[str, str] = {}
        cursor: int | None = 0
        while cursor is not None:  # what reconciliation reads
            chunk, cursor = await b._backend.held("b", cursor)
            held.update(chunk)
        assert held == {f"sid-{i}": user_id for i, user_id in enumerate(users)}
        with pytest.raises(ValidationError):  # the sid is held for another user
            await b.connect(packed[1], "sid-0")
        assert await b.connections(packed[2]) == ["sid-2"]
        for i in range(0, len(users), 2):
            assert await b.disconnect(f"sid-{i}") == Departure(users[i], f"sid-{i}", True)
        await stop_heartbeat(b)
        clock.advance(30)
        departures = await a.purge_expired()
        assert sorted(d.user_id for d in departures) == sorted(users[1::2])
        assert await a.count() == PresenceCount(0, 0)
    finally:
        await a.close()
        await b.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from rtkit import PresenceStore, RoomManager

    async def main(url, prefix):
        kw = dict(prefix=prefix, instance_id="child", ttl=1.0)
        presence = PresenceStore.from_url(url, **kw)
        rooms = RoomManager.from_url(url, **kw)
        await presence.start()
        await rooms.start()
        sees_parent = await presence.is_online("parent-user")
        for i in range(20):
            await presence.connect(f"child-{i}", f"c{i}", username=f"Child {i}")
            await rooms.join("lobby", f"child-{i}", f"c{i}")
        print("ready", sees_parent, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
async def test_a_sigkilled_process_users_are_removed_within_two_ttls(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RecordingBus()
    kw: dict[str, Any] = {"prefix": redis_prefix, "instance_id": "parent", "ttl": 1.0}
    presence = PresenceStore.from_url(redis_url, bus=bus, **kw)
    rooms = RoomManager.from_url(redis_url, **kw)
    await presence.start()
    await rooms.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, redis_url, redis_prefix, stdout=asyncio.subprocess.PIPE
    )
    try:
        await presence.connect("parent-user", "p1")
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.split() == [b"ready", b"True"]  # the child saw the parent's user
        assert await presence.count() == PresenceCount(21, 21)  # and the parent sees the child's
        assert len((await rooms.members("lobby")).items) == 20

        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        killed = time.monotonic()
        while await presence.count() != PresenceCount(1, 1) or await rooms.rooms_of("child-0"):
            assert time.monotonic() - killed < 30, "the killed instance was never purged"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - killed
        # bound: ttl + ttl/3 after the last heartbeat = 1.33 s; generous slack for a busy CPU
        assert elapsed < 2 * 1.0 + 3.0, f"purged after {elapsed:.2f} s"
        # The pass announces what it removed once it removed it: wait for the last event.
        while len(offline := [d for n, d in bus.events if n == "presence.offline"]) < 20:
            assert time.monotonic() - killed < 30, f"{len(offline)} presence.offline events"
            await asyncio.sleep(0.05)
        assert sorted(d["user_id"] for d in offline) == sorted(f"child-{i}" for i in range(20))
        assert {d["instance_id"] for d in offline} == {"child"}
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await presence.close()
        await rooms.close()


async def test_instances_racing_on_one_user_keep_exact_counts(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RecordingBus()
    a = PresenceStore.from_url(redis_url, prefix=redis_prefix, instance_id="a", bus=bus)
    b = PresenceStore.from_url(redis_url, prefix=redis_prefix, instance_id="b", bus=bus)
    try:

        async def churn(store: PresenceStore, tag: str) -> None:
            for i in range(60):
                await store.connect("ada", f"{tag}-{i}")
                if i % 3:
                    await store.disconnect(f"{tag}-{i}")

        await asyncio.gather(*(churn(s, f"{s.instance_id}{k}") for s in (a, b) for k in range(3)))
        left = await a.connections("ada")
        assert len(left) == 6 * 20  # every third connection stays
        assert await a.count() == PresenceCount(1, 120)
        for sid in left:
            await (a if sid.startswith("a") else b).disconnect(sid)
        assert await b.count() == PresenceCount(0, 0)
        assert not await b.is_online("ada")
        # online and offline strictly alternate, whatever the interleaving
        names = [name for name, _ in bus.events]
        assert names[0::2] == ["presence.online"] * (len(names) // 2)
        assert names[1::2] == ["presence.offline"] * (len(names) // 2)
    finally:
        await a.close()
        await b.close()


async def test_backends_can_be_given_on_a_borrowed_client(
    redis_url: str, redis_prefix: str
) -> None:
    from rtkit._core.redis import RedisHandle
    from rtkit.presence.backends.redis import RedisPresenceBackend
    from rtkit.rooms.backends.redis import RedisRoomsBackend

    client = redis_client(redis_url)
    try:
        handle = RedisHandle(client=client)
        presence = PresenceStore(RedisPresenceBackend(handle, redis_prefix), instance_id="n")
        rooms = RoomManager(RedisRoomsBackend(handle, redis_prefix), instance_id="n")
        async with presence, rooms:
            await presence.connect("ada", "a1")
            await rooms.join("lobby", "ada", "a1")
            assert await presence.is_online("ada")
            assert await rooms.is_member("lobby", "ada")
        assert await client.ping()
        assert await keys_under(client, redis_prefix) == []
    finally:
        await client.aclose()
