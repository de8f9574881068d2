"""A Redis master dies during chat between two instances: chat resumes by itself.

Each test starts its own topology (the session ones stay whole): a cluster with
replicas (the sharded manager, its default) with the master of the room's shard
channel killed, and a Sentinel setup (each adapter) with its master killed.
Within 20 s a message sent on one instance reaches the other again, with no
help: the managers resubscribe, the stores reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import redis
from realtime_support import Chat, User, make_server, serving
from redis.crc import key_slot

from rtkit.realtime._chat import room_channel
from rtkit.realtime.managers import ShardedRedisManager
from rtkit_topology import PrivateCluster, PrivateSentinel, RedisNode

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECOVERY = 20.0
log = logging.getLogger(__name__)
PREFIX = "failover:"


@asynccontextmanager
async def chatting(url: str, **options: str) -> AsyncIterator[tuple[Chat, User, User]]:
    """Two instances on ``url``; Ada on the first and Bob on the second, both in the lobby."""
    async with AsyncExitStack() as stack:
        chats = []
        for _ in range(2):
            server = make_server(url, PREFIX, timeout=1.0, **options)
            chats.append(Chat(await stack.enter_async_context(serving(server)), server))
            stack.push_async_callback(chats[-1].close)
        ada = await chats[0].connect("ada")
        bob = await chats[1].connect("bob")
        await ada.client.join_room("lobby")
        await bob.client.join_room("lobby")
        yield chats[0], ada, bob


async def delivered(ada: User, bob: User, n: int) -> str | None:
    """Why message ``n`` from Ada did not reach Bob (``None``: it did)."""
    try:
        async with asyncio.timeout(2.0):
            await ada.client.send_message("lobby", f"m{n}")
            await bob.seen.wait_for("chat:message", lambda m: m.message == f"m{n}", timeout=1.0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def resumes(ada: User, bob: User) -> float:
    """Seconds until chat works again (fails the test past RECOVERY, saying why)."""
    start = time.monotonic()
    n = 1000
    while (problem := await delivered(ada, bob, n)) is not None:
        assert time.monotonic() - start < RECOVERY, f"chat did not resume in 20 s: {problem}"
        n += 1
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def _owner(cluster: PrivateCluster, channel: str) -> RedisNode:
    client = redis.Redis(port=cluster.masters()[0].port)
    try:
        slot = key_slot(channel.encode())
        for start, end, master, *_ in client.cluster("slots"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(master[1]))
    finally:
        client.close()
    raise AssertionError("no master owns the slot")


async def test_chat_resumes_after_a_cluster_master_dies() -> None:
    cluster = PrivateCluster()
    cluster.start()
    try:
        async with chatting(cluster.url) as (first, ada, bob):
            manager = first.server.sio.manager
            assert isinstance(manager, ShardedRedisManager)
            victim = _owner(cluster, manager.room_channel(room_channel("lobby")))
            assert await delivered(ada, bob, 1) is None
            victim.stop()
            log.info("chat resumed after %.1f s", await resumes(ada, bob))
            assert victim.port not in [n.port for n in cluster.masters()]
    finally:
        cluster.stop()


@pytest.mark.parametrize("adapter", ["socketio", "sharded"])
async def test_chat_resumes_after_the_sentinel_master_dies(adapter: str) -> None:
    setup = PrivateSentinel(service="rtkit-chat-failover")
    setup.start()
    try:
        async with chatting(setup.url, adapter=adapter) as (_, ada, bob):
            assert await delivered(ada, bob, 1) is None
            old = setup.master.port
            setup.master.stop()
            log.info("chat resumed after %.1f s", await resumes(ada, bob))
            assert setup.current_master_port() != old
    finally:
        setup.stop()
