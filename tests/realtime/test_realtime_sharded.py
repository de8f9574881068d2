"""The sharded Socket.IO manager on the private Redis Cluster (the default there).

Three instances in this process: a room's messages reach only the instances with
members in it, subscriptions follow membership (counted by Redis itself), and
what is not a room broadcast (to a connection of another instance, its
disconnection, acks, ``close_room``, everyone) still crosses instances.
The two-process test runs in ``test_multi_instance.py``; failovers in
``test_realtime_failover.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import socketio
from realtime_support import Chat, User, eventually, make_server, serving

from rtkit._core.redis import make_redis_client
from rtkit.errors import ConfigurationError
from rtkit.realtime import RealtimeServer
from rtkit.realtime._chat import room_channel
from rtkit.realtime._socketio_compat import initialize_manager, stop_manager
from rtkit.realtime.managers import ShardedRedisManager, make_manager
from rtkit_topology import PrivateCluster

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


def manager(chat: Chat) -> ShardedRedisManager:
    found = chat.server.sio.manager
    assert isinstance(found, ShardedRedisManager)
    return found


@pytest.fixture
async def three(redis_cluster: PrivateCluster, redis_prefix: str) -> AsyncIterator[list[Chat]]:
    """Three instances on the cluster, sharing ``redis_prefix``."""
    async with AsyncExitStack() as stack:
        chats = []
        for _ in range(3):
            server = make_server(redis_cluster.url, redis_prefix)
            chats.append(Chat(await stack.enter_async_context(serving(server)), server))
            stack.push_async_callback(chats[-1].close)
        yield chats


@pytest.fixture
async def probe(redis_cluster: PrivateCluster) -> AsyncIterator[Any]:
    client: Any = make_redis_client(redis_cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


async def listeners(probe: Any, channel: str) -> int:
    """How many connections Redis has subscribed to shard channel ``channel``."""
    node = probe.get_node_from_key(channel)
    reply = await probe.execute_command("PUBSUB", "SHARDNUMSUB", channel, target_nodes=node)
    return int(reply[1])


async def test_a_room_message_reaches_only_the_instances_with_members(
    three: list[Chat], probe: Any
) -> None:
    a, b, c = three
    ada = await a.connect("ada")
    bob = await b.connect("bob")
    await c.connect("carol")  # online, in no room
    await ada.client.join_room("lobby")
    await bob.client.join_room("lobby")
    channel = manager(a).room_channel(room_channel("lobby"))
    assert await listeners(probe, channel) == 2
    assert channel in manager(b).wanted() and channel not in manager(c).wanted()

    heard = [manager(chat).received for chat in three]
    for n in range(5):
        await ada.client.send_message("lobby", f"m{n}")
    await bob.seen.wait_for("chat:message", lambda m: m.message == "m4")
    now = [manager(chat).received for chat in three]
    assert now[2] == heard[2]  # C has nobody in the lobby: it read none of them
    assert now[1] - heard[1] == 5

    # Subscriptions follow membership: Bob leaves, B unsubscribes; he comes back, B again.
    await bob.client.leave_room("lobby")

    async def b_left() -> bool:
        return await listeners(probe, channel) == 1

    await eventually(b_left)
    assert channel not in manager(b).wanted()
    await bob.client.join_room("lobby")  # confirmed by Redis before the join's ack
    assert await listeners(probe, channel) == 2
    sent = await ada.client.send_message("lobby", "welcome back")
    await bob.seen.wait_for("chat:message", lambda m: m.id == sent)
    assert [manager(chat).reconnects for chat in three] == [0, 0, 0]  # all on one connection


async def _connected(chat: Chat, user: User) -> str:
    """The sid of ``user`` on its instance."""
    sid = user.client.sid
    assert sid is not None
    return sid


async def test_what_is_not_a_room_broadcast_crosses_instances(three: list[Chat]) -> None:
    a, b, _ = three
    bob = await b.connect("bob")
    bob_sid = await _connected(b, bob)
    pings: list[Any] = []

    async def on_probe(data: Any) -> str:
        pings.append(data)
        return f"pong {data}"

    bob.client.sio.on("probe", on_probe)
    sio = a.server.sio

    # To a connection of another instance, with an ack coming back.
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await sio.emit("probe", 1, to=bob_sid, callback=answered.set_result)
    assert await asyncio.wait_for(answered, 15) == "pong 1"

    # Into a room from another instance, a broadcast to it, then the room closed.
    await sio.enter_room(bob_sid, "side")
    await eventually(lambda: _true(manager(b).room_channel("side") in manager(b)._live))
    await sio.emit("probe", 2, room="side")
    await eventually(lambda: _true(2 in pings))
    await sio.close_room("side")
    await eventually(lambda: _true(manager(b).room_channel("side") not in manager(b).wanted()))

    # To everyone; then the connection is ended from the other instance.
    await sio.emit("probe", 3)
    await eventually(lambda: _true(3 in pings))
    await sio.disconnect(bob_sid)
    await eventually(lambda: _true(not bob.client.connected))


async def _true(value: bool) -> bool:
    return value


async def test_adapter_option(
    redis_cluster: PrivateCluster, redis_url: str, redis_prefix: str
) -> None:
    with pytest.raises(ConfigurationError, match="adapter"):
        RealtimeServer.from_url("memory://", adapter="sharded")
    with pytest.raises(ConfigurationError, match="unknown adapter"):
        make_manager("nope", redis_url)
    client: Any = make_redis_client(redis_url)
    with pytest.raises(ConfigurationError, match="adapter 'sharded'"):
        make_manager("sharded", redis_url, redis=client, colour="blue")
    await client.aclose()
    async with RealtimeServer.from_url(redis_url, adapter="sharded", prefix=redis_prefix) as one:
        assert isinstance(one.sio.manager, ShardedRedisManager)
        assert one.sio.manager.channel.startswith("{" + redis_prefix + "socketio:db")
    with pytest.raises(ConfigurationError, match="adapter='sharded'"):
        RealtimeServer.from_url(redis_cluster.url, adapter="socketio")


class _CountingServer(socketio.AsyncServer):  # type: ignore[misc]
    """A python-socketio server whose sends to a connection are only recorded."""

    def __init__(self, manager: ShardedRedisManager) -> None:
        super().__init__(async_mode="asgi", client_manager=manager)
        self.sent: list[str] = []

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        self.sent.append(eio_sid)


async def test_the_manager_alone_on_fresh_cluster_clients(
    redis_cluster: PrivateCluster, redis_prefix: str
) -> None:
    """Outside RealtimeServer (python-socketio's own server), each with a client nobody
    used before: the manager reads the slot map itself."""
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(2):
            client: Any = make_redis_client(redis_cluster.url)
            stack.push_async_callback(client.aclose)
            server = _CountingServer(ShardedRedisManager(client, prefix=redis_prefix))
            initialize_manager(server)
            stack.push_async_callback(stop_manager, server, close_redis=False)
            servers.append(server)
        first, second = (s.manager for s in servers)
        sid = await second.connect("eio-1", "/")
        await second.enter_room(sid, "/", "room")
        await first.emit("hello", 1, namespace="/", room="room")
        await eventually(lambda: _true(servers[1].sent == ["eio-1"]))
        assert first.received == 0  # nobody in the room on the first instance
