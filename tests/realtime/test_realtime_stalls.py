"""A RealtimeServer on a redis-server that freezes or restarts empty, with real clients.

Each test runs its own redis-server (``PrivateRedis``: SIGSTOP freezes it, a kill and
a start on the same port restart it without its data); the shared Redis is never
touched. The server's lease is short (``presence_ttl``), so "within the lease bound"
(``ttl + ttl / 3``, plus one round-trip ``timeout``) is a couple of seconds.

Also: the per-user room limit holds under concurrent joins over sockets (on memory and
on the shared Redis).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from realtime_support import Chat, User, eventually, make_server, serving

from rtkit.errors import BackendUnavailable, TooManyRooms
from rtkit.realtime import RealtimeServer
from rtkit_testing import PrivateRedis

TTL = 1.5
TIMEOUT = 0.5
BOUND = TTL + TTL / 3 + TIMEOUT + 3.0  # the lease bound, one time-out, slack for a busy CPU


@pytest.fixture
async def stalled(private_redis: PrivateRedis) -> AsyncIterator[Chat]:
    """A RealtimeServer on a private redis-server, served on a real socket."""
    server = make_server(private_redis.url, "rtkit-stall:", presence_ttl=TTL, timeout=TIMEOUT)
    async with serving(server) as url:
        chat = Chat(url, server)
        try:
            yield chat
        finally:
            private_redis.thaw()
            await chat.close()


async def warm(server: RealtimeServer) -> None:
    """Open several pooled connections: a call made during a freeze is sent at once
    (and runs when Redis thaws, its reply lost)."""
    await asyncio.gather(*(server.presence.is_online("nobody") for _ in range(8)))


async def cold(server: RealtimeServer) -> None:
    """Close the pooled connections: a call made during a freeze is never sent."""
    assert server._redis is not None
    await server._redis.connection_pool.disconnect()


async def notify(sender: User, target: str) -> bool:
    """Send ``target`` a notification; whether the server says it was delivered."""
    payload = {"targetUserId": target, "type": "ping", "content": "hello"}
    reply: dict[str, Any] = await sender.client._call("notification:send", payload)
    return bool(reply["delivered"])


async def online(chat: Chat) -> list[str]:
    async with httpx.AsyncClient(base_url=chat.url) as http:
        users = (await http.get("/api/online-users")).json()["users"]
    return [u["userId"] for u in users]


@pytest.mark.redis
@pytest.mark.slow
async def test_a_client_refused_during_a_stall_is_no_ghost(
    private_redis: PrivateRedis, stalled: Chat
) -> None:
    server = stalled.server
    watcher = await stalled.connect("watcher")
    await warm(server)
    private_redis.freeze()
    with pytest.raises(BackendUnavailable):
        await stalled.connect("ghost")  # refused after the time-out
    private_redis.thaw()
    # the server may still be recording that connect (its calls wait up to TIMEOUT each,
    # the connect rate included): let it finish, then the ghost must go
    await asyncio.sleep(3 * TIMEOUT)

    async def gone() -> bool:
        return not await server.presence.is_online("ghost")

    await eventually(gone, timeout=BOUND)
    assert await online(stalled) == ["watcher"]
    assert await notify(watcher, "ghost") is False  # kept for later, not lost
    ghost = await stalled.connect("ghost")  # really connecting...
    note = await ghost.seen.wait_for("notification:received")
    assert note.from_user_id == "watcher"
    await ghost.client.disconnect()  # ...and leaving

    await eventually(gone, timeout=BOUND)
    await asyncio.sleep(TTL)
    assert await online(stalled) == ["watcher"]  # for good


@pytest.mark.redis
@pytest.mark.slow
async def test_a_disconnect_during_a_stall_is_completed_within_the_lease_bound(
    private_redis: PrivateRedis, stalled: Chat
) -> None:
    server = stalled.server
    watcher = await stalled.connect("watcher")
    leaver = await stalled.connect("leaver")
    for user in (watcher, leaver):
        await user.client.join_room("lobby")
    await cold(server)
    private_redis.freeze()
    await leaver.client.disconnect()
    await asyncio.sleep(3 * TIMEOUT)  # the server tried to record the departure, in vain
    private_redis.thaw()

    async def gone() -> bool:
        lobby = await server.rooms.members("lobby")
        return not await server.presence.is_online("leaver") and lobby.items == ["watcher"]

    await eventually(gone, timeout=BOUND)
    left = await watcher.seen.wait_for("room:user:left")  # the room hears of it
    assert (left.user_id, left.room_id) == ("leaver", "lobby")
    assert await notify(watcher, "leaver") is False
    assert await online(stalled) == ["watcher"]


@pytest.mark.redis
@pytest.mark.slow
async def test_after_a_restart_that_lost_the_data_live_connections_are_put_back(
    private_redis: PrivateRedis, stalled: Chat
) -> None:
    server = stalled.server
    ada = await stalled.connect("ada", "Ada")
    bob = await stalled.connect("bob", "Bob")
    for user in (ada, bob):
        await user.client.join_room("lobby")
    await bob.client.join_room("games")
    private_redis.stop()
    private_redis.start()  # empty, on the same port; nobody reconnects

    async def put_back() -> bool:
        try:
            rooms = (await server.rooms.rooms()).items
            return await online(stalled) == ["ada", "bob"] and [
                (r.room_id, r.user_count) for r in rooms
            ] == [("games", 1), ("lobby", 2)]
        except BackendUnavailable:
            return False

    await eventually(put_back, timeout=BOUND)
    assert ada.client.connected and bob.client.connected  # no client had to reconnect
    assert (await server.rooms.members("lobby")).items == ["ada", "bob"]
    assert await notify(bob, "ada") is True
    note = await ada.seen.wait_for("notification:received", timeout=30)
    assert note.from_user_id == "bob"


async def test_concurrent_joins_over_sockets_stop_at_the_room_limit(chat: Chat) -> None:
    ada = await chat.connect("ada")
    limit = chat.server.chat.limits.max_rooms_per_user  # 100
    await asyncio.gather(*(ada.client.join_room(f"first-{i}") for i in range(limit - 10)))
    # 40 joins at once near the limit: the check and the join are one atomic step
    results = await asyncio.gather(
        *(ada.client.join_room(f"room-{i}") for i in range(40)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, TooManyRooms) for r in refused), refused[:3]
    assert len(refused) == 30
    assert len(await chat.server.rooms.rooms_of("ada")) == limit
