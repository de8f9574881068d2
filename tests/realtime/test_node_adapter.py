"""rtkit and Node Socket.IO servers in one cluster (``adapter="node-redis"``).

A real Node server with ``@socket.io/redis-adapter`` 8.x (``tests/node/redis_adapter_peer.mjs``,
pinned in ``tests/node/package.json``) and an rtkit server share the shared Redis under
a key unique to each test. Clients are the official ``socket.io-client`` of npm, on
either server. Every check goes both ways: what one server emits or asks, the
other's clients get or answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from node_peer import NodePeer, node_peer
from realtime_support import SECRET, Chat, make_server, serving, token_for
from rtkit_process import rtkit_serve
from rtkit_process import token_for as serve_token

from rtkit.realtime import RealtimeServer
from rtkit.realtime.managers.node_redis import NodeRedisManager
from rtkit_testing import PrivateRedis

pytestmark = [pytest.mark.node, pytest.mark.redis, pytest.mark.slow]


@dataclass
class Cluster:
    """The Node server (``node``) and the rtkit server (``rtkit`` at ``url``), one cluster."""

    node: NodePeer
    rtkit: RealtimeServer
    url: str
    key: str

    @property
    def manager(self) -> NodeRedisManager:
        manager = self.rtkit.sio.manager
        assert isinstance(manager, NodeRedisManager)
        return manager

    async def rtkit_client(self, name: str, user_id: str | None = None) -> str:
        """A Node client of the rtkit server (user ``user_id``, named ``name``); its sid."""
        auth = {"token": token_for(user_id or name, name.title())}
        answer = await self.node.call("client", name=name, url=self.url, auth=auth)
        return str(answer["id"])

    async def node_client(self, name: str, rooms: tuple[str, ...] = ()) -> str:
        """A client of the Node server, in ``rooms``; its socket id."""
        answer = await self.node.call("client", name=name, auth={"rooms": rooms, "name": name})
        return str(answer["id"])


@pytest.fixture
async def cluster(redis_url: str, redis_prefix: str) -> AsyncIterator[Cluster]:
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    server = make_server(
        redis_url, redis_prefix, adapter="node-redis", adapter_options={"key": key}
    )
    async with serving(server) as url, node_peer(redis_url, key) as node:
        manager = server.sio.manager
        assert isinstance(manager, NodeRedisManager)
        async with asyncio.timeout(15):
            while await manager.server_count() < 2:  # noqa: ASYNC110  (Redis counts)
                await asyncio.sleep(0.05)
        yield Cluster(node, server, url, key)


async def test_rtkit_emits_reach_the_clients_of_the_node_server(cluster: Cluster) -> None:
    await cluster.node_client("ann", rooms=("red",))
    bob = await cluster.node_client("bob", rooms=("red", "blue"))
    await cluster.node_client("cat")
    sio = cluster.rtkit.sio

    await sio.emit("to-all", {"n": 1})
    await sio.emit("to-red", [1, "two"], to="red")
    await sio.emit("to-red-but-bob", None, to="red", skip_sid=bob)
    await sio.emit("to-bob", ("several", b"\x00\xff"), to=bob)
    await sio.emit("to-red-or-blue", 3, to=["red", "blue"])
    await sio.emit("done", None)

    seen = {name: await cluster.node.wait_event(name, "done") for name in ("ann", "bob", "cat")}
    events = {name: await _events(cluster.node, name) for name in seen}
    assert events["ann"] == [
        ("to-all", [{"n": 1}]),
        ("to-red", [[1, "two"]]),
        ("to-red-but-bob", []),
        ("to-red-or-blue", [3]),
        ("done", []),
    ]
    assert events["bob"] == [
        ("to-all", [{"n": 1}]),
        ("to-red", [[1, "two"]]),
        ("to-bob", ["several", {"bytes": [0, 255]}]),
        ("to-red-or-blue", [3]),  # once, though in both rooms
        ("done", []),
    ]
    assert events["cat"] == [("to-all", [{"n": 1}]), ("done", [])]


async def test_node_emits_reach_the_clients_of_the_rtkit_server(cluster: Cluster) -> None:
    ann = await cluster.rtkit_client("ann")
    bob = await cluster.rtkit_client("bob")
    sio = cluster.rtkit.sio
    await sio.enter_room(ann, "red")
    await sio.enter_room(bob, "red")
    node = cluster.node

    await node.call("emit", event="to-all", args=[{"n": 1}])
    await node.call("emit", event="to-red", to="red", args=["x", 2.5])
    await node.call("emit", event="to-red-but-bob", to="red", **{"except": bob})
    await node.call("emit", event="to-bob", to=bob, args=[{"bytes": [1, 2]}])
    await node.call("emit", event="dated", to=ann, args=[{"date": "2000-06-13T00:00:00.000Z"}])
    await node.call("emit", event="to-nobody", to="green")
    await node.call("emit", event="to-red-or-green", to=["red", "green"])
    await node.call("emit", event="done")

    for name in ("ann", "bob"):
        await node.wait_event(name, "done")
    ann_events = [e for e in await _events(node, "ann") if not e[0].startswith(("user", "users"))]
    bob_events = [e for e in await _events(node, "bob") if not e[0].startswith(("user", "users"))]
    assert ann_events == [
        ("to-all", [{"n": 1}]),
        ("to-red", ["x", 2.5]),
        ("to-red-but-bob", []),
        ("dated", ["2000-06-13T00:00:00.000Z"]),  # as JSON.stringify sends a Date
        ("to-red-or-green", []),
        ("done", []),
    ]
    assert bob_events == [
        ("to-all", [{"n": 1}]),
        ("to-red", ["x", 2.5]),
        ("to-bob", [{"bytes": [1, 2]}]),
        ("to-red-or-green", []),
        ("done", []),
    ]


async def _events(node: NodePeer, name: str) -> list[tuple[str, list[Any]]]:
    return [(e["event"], e["args"]) for e in await node.events(name)]


async def test_node_fetch_sockets_sees_rtkit_sockets_their_rooms_and_users(
    cluster: Cluster,
) -> None:
    ann = await cluster.rtkit_client("ann", user_id="u-ann")
    await cluster.node.call("clientEmit", name="ann", event="room:join", args=["lobby"])
    await cluster.node.wait_event("ann", "room:joined")
    nia = await cluster.node_client("nia", rooms=("room:lobby",))

    found = {s["id"]: s for s in await cluster.node.call("fetchSockets", to="room:lobby")}
    assert set(found) == {ann, nia}
    mine = found[ann]
    assert set(mine["rooms"]) == {ann, "user:u-ann", "room:lobby"}
    assert mine["data"] == {"userId": "u-ann", "username": "Ann"}
    assert mine["handshake"]["auth"] == {}  # the token stays in rtkit's process
    assert "authorization" not in mine["handshake"]["headers"]
    assert isinstance(mine["handshake"]["issued"], int)
    assert found[nia]["data"] == {"side": "node", "name": "nia"}

    everyone = {s["id"] for s in await cluster.node.call("fetchSockets")}
    assert everyone == {ann, nia}
    rooms = set(await cluster.node.call("allRooms"))
    assert {"room:lobby", "user:u-ann", ann, nia} <= rooms

    # And the other way: rtkit asks the Node server.
    seen = await cluster.manager.fetch_sockets(["room:lobby"], except_rooms=[ann])
    assert [s["id"] for s in seen] == [nia]
    assert seen[0]["data"] == {"side": "node", "name": "nia"}
    assert {"room:lobby", "user:u-ann", ann, nia} <= await cluster.manager.all_rooms()
    assert await cluster.node.call("serverCount") == 2


async def test_server_side_emits_both_ways_with_and_without_acks(cluster: Cluster) -> None:
    got: list[Any] = []

    async def hello(*args: Any) -> dict[str, Any]:
        got.append(list(args))
        return {"from": "rtkit", "got": list(args)}

    cluster.manager.on_server_event("hello", hello)
    answers = await cluster.node.call("serverSideEmit", event="hello", args=[1, "a"], ack=True)
    assert answers == [{"from": "rtkit", "got": [1, "a"]}]
    await cluster.node.call("serverSideEmit", event="hello", args=["no ack"])
    async with asyncio.timeout(10):
        while len(got) < 2:  # noqa: ASYNC110  (filled by the manager's listener)
            await asyncio.sleep(0.02)
    assert got == [[1, "a"], ["no ack"]]

    answers = await cluster.manager.server_side_emit_with_ack("hello", {"x": 1})
    assert answers == [{"from": "node", "got": [{"x": 1}]}]
    await cluster.manager.server_side_emit("hello", "plain")
    async with asyncio.timeout(10):
        while ["plain"] not in await cluster.node.call("serverEvents"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_node_joins_leaves_and_disconnects_rtkit_sockets(cluster: Cluster) -> None:
    ann = await cluster.rtkit_client("ann")
    bob = await cluster.rtkit_client("bob")
    node, manager = cluster.node, cluster.manager

    await node.call("socketsJoin", rooms=["green"], to=ann)
    await _until(lambda: "green" in manager.get_rooms(ann, "/"))
    await node.call("socketsJoin", rooms=["blue"])
    await _until(lambda: "blue" in manager.get_rooms(bob, "/"))
    await node.call("socketsLeave", rooms=["blue"], to="green")
    await _until(lambda: "blue" not in manager.get_rooms(ann, "/"))
    assert "blue" in manager.get_rooms(bob, "/")

    # In the Socket.IO room of a chat room, but not a member of the chat room.
    await node.call("socketsJoin", rooms=["room:secret"], to=bob)
    await _until(lambda: "room:secret" in manager.get_rooms(bob, "/"))
    await node.call("emit", event="chat:message", to="room:secret", args=[{"m": 1}])
    await node.wait_event("bob", "chat:message")
    post = {"roomId": "secret", "message": "let me in"}
    await node.call("clientEmit", name="bob", event="chat:message", args=[post])
    refused = await node.wait_event("bob", "error")
    assert refused[0]["code"] == "not_member"

    await node.call("disconnectSockets", to="green")
    await node.wait_event("ann", "<disconnect>")
    assert manager.is_connected(bob, "/")


async def test_rtkit_joins_leaves_and_disconnects_node_sockets(cluster: Cluster) -> None:
    nia = await cluster.node_client("nia")
    noe = await cluster.node_client("noe")
    sio, node = cluster.rtkit.sio, cluster.node

    await sio.enter_room(nia, "green")  # a socket of the Node server
    await _until_node(node, nia, lambda rooms: "green" in rooms)
    await cluster.manager.add_sockets(["blue"])
    await _until_node(node, noe, lambda rooms: "blue" in rooms)
    await sio.leave_room(nia, "green")
    await _until_node(node, nia, lambda rooms: "green" not in rooms)
    await cluster.manager.del_sockets(["blue"], ["blue"])
    await _until_node(node, noe, lambda rooms: "blue" not in rooms)

    await sio.disconnect(nia)
    await node.wait_event("nia", "<disconnect>")
    await cluster.manager.disconnect_sockets([noe])
    await node.wait_event("noe", "<disconnect>")


async def test_acks_cross_the_cluster_both_ways(cluster: Cluster) -> None:
    ann = await cluster.rtkit_client("ann")
    await cluster.rtkit.sio.enter_room(ann, "red")
    await cluster.node_client("nia", rooms=("red",))

    # A Node server's timeout().emitWithAck() waits for every client of every server.
    answers = await cluster.node.call("emitWithAck", event="ask", to="red", args=[7])
    assert sorted(a["ackFrom"] for a in answers) == ["ann", "nia"]
    assert all(a["args"] == [7] for a in answers)

    # rtkit's call() to a socket of the Node server.
    nia = await cluster.node.call("fetchSockets", to="red")
    nia_id = next(s["id"] for s in nia if s["id"] != ann)
    answer = await cluster.rtkit.sio.call("ask", {"q": 1}, to=nia_id, timeout=10)
    assert answer == {"ackFrom": "nia", "args": [{"q": 1}]}


async def test_chat_rooms_are_shared_with_node_servers(cluster: Cluster) -> None:
    """rtkit's chat room ``R`` is the Socket.IO room ``room:R`` on every server."""
    await cluster.rtkit_client("ann", user_id="u-ann")
    await cluster.node.call("clientEmit", name="ann", event="room:join", args=["lobby"])
    await cluster.node.wait_event("ann", "room:joined")
    await cluster.node_client("nia", rooms=("room:lobby",))

    payload = {"roomId": "lobby", "message": "from ann", "type": "text"}
    await cluster.node.call("clientEmit", name="ann", event="chat:message", args=[payload])
    message = (await cluster.node.wait_event("nia", "chat:message"))[0]
    assert (message["userId"], message["message"]) == ("u-ann", "from ann")

    await cluster.node.call("emit", event="chat:message", to="room:lobby", args=[{"m": "node"}])
    await cluster.node.wait_event("ann", "chat:message", lambda args: args == [{"m": "node"}])


async def test_room_prefix_meets_the_seed_servers_bare_room_ids(
    redis_url: str, redis_prefix: str
) -> None:
    """The seed's Node chat server joins ``lobby``; rtkit's chat room lobby is ``room:lobby``."""
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    options = {"key": key, "room_prefix": "room:"}
    server = make_server(redis_url, redis_prefix, adapter="node-redis", adapter_options=options)
    async with serving(server) as url, node_peer(redis_url, key) as node:
        cluster = Cluster(node, server, url, key)
        await _counted(node, 2)
        ann = await cluster.rtkit_client("ann", user_id="u-ann")
        await node.call("clientEmit", name="ann", event="room:join", args=["lobby"])
        await node.wait_event("ann", "room:joined")
        nia = await cluster.node_client("nia", rooms=("lobby",))  # as the seed joins

        post = {"roomId": "lobby", "message": "to the seed's room", "type": "text"}
        await node.call("clientEmit", name="ann", event="chat:message", args=[post])
        message = (await node.wait_event("nia", "chat:message"))[0]
        assert message["message"] == "to the seed's room"

        await node.call("emit", event="chat:message", to="lobby", args=[{"m": "seed"}])
        await node.wait_event("ann", "chat:message", lambda args: args == [{"m": "seed"}])
        await node.call("emit", event="not-ann", to="lobby", **{"except": "lobby"})
        await node.call("emit", event="done", to="lobby")
        await node.wait_event("ann", "done")
        assert "not-ann" not in [e["event"] for e in await node.events("ann")]

        found = {s["id"]: s for s in await node.call("fetchSockets", to="lobby")}
        assert set(found) == {ann, nia}
        assert "lobby" in found[ann]["rooms"]
        assert "room:lobby" not in found[ann]["rooms"]
        assert "lobby" in await node.call("allRooms")

        await server.sio.enter_room(nia, "room:side")  # the Node socket joins "side"
        await _until_node(node, nia, lambda rooms: "side" in rooms)
        await node.call("socketsJoin", rooms=["other"], to=ann)
        await _until(lambda: "room:other" in cluster.manager.get_rooms(ann, "/"))


async def test_garbage_on_the_adapter_channels_changes_nothing(
    cluster: Cluster, redis_client: Any
) -> None:
    ann = await cluster.rtkit_client("ann")
    await cluster.rtkit.sio.enter_room(ann, "red")
    key = cluster.key
    # (broadcast junk goes to a room only rtkit has: the Node adapter would crash on it)
    for channel, junk in [
        (f"{key}#/#red#", b"\xc1"),  # never valid msgpack
        (f"{key}#/#red#", b"\x93\xa3abc\xc0\x80"),  # [uid, nil, {}]
        (f"{key}#/#red#", b'{"not": "a list"}'),
        (f"{key}#/#red#", b"\x93\xa3abc\x82\xa4type\x02\xa4data\x90\x80"),  # no event name
        (f"{key}#/#red#", b"\x93\xa3abc\x81\xa4type\x02\x81\xa5rooms\x01"),  # rooms: 1
        (f"{key}-request#/#", b"\x81\xa4type\xa3bad"),
        (f"{key}-request#/#", b'{"type": 5, "requestId": 12, "opts": 3}'),
        (f"{key}-response#/#", b"[]"),
    ]:
        await redis_client.publish(channel, junk)
    await cluster.node.call("emit", event="still", to="red", args=[1])
    await cluster.node.wait_event("ann", "still")
    assert cluster.manager.thread is not None and not cluster.manager.thread.done()
    assert cluster.manager.is_connected(ann, "/")


async def test_rtkit_serve_adapter_node_redis_joins_the_node_cluster(
    redis_url: str, redis_prefix: str
) -> None:
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    options = ("--adapter", "node-redis", "--adapter-key", key, "--adapter-room-prefix", "room:")
    async with (
        rtkit_serve("--redis", redis_url, "--prefix", redis_prefix, *options) as server,
        node_peer(redis_url, key) as node,
    ):
        async with asyncio.timeout(15):
            while await node.call("serverCount") < 2:  # noqa: ASYNC110  (Redis counts)
                await asyncio.sleep(0.05)
        auth = {"token": serve_token("u-ann", "Ann")}
        ann = (await node.call("client", name="ann", url=server.url, auth=auth))["id"]
        await node.call("clientEmit", name="ann", event="room:join", args=["lobby"])
        await node.wait_event("ann", "room:joined")
        found = await node.call("fetchSockets", to="lobby")  # room:lobby, as the seed names it
        assert [s["id"] for s in found] == [ann]
        assert found[0]["data"] == {"userId": "u-ann", "username": "Ann"}
        await node.call("emit", event="from-node", args=["hi"])
        assert await node.wait_event("ann", "from-node") == ["hi"]


async def test_answers_on_the_requesters_own_response_channel(redis_url: str) -> None:
    """Both sides with ``publishOnSpecificResponseChannel``; and a manager given to the
    constructor (the server's own stores in memory)."""
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    manager = NodeRedisManager(redis_url, key=key, publish_on_specific_response_channel=True)
    server = RealtimeServer(secret=SECRET, client_manager=manager)
    async with serving(server) as url, node_peer(redis_url, key, specific=True) as node:
        cluster = Cluster(node, server, url, key)
        await _counted(node, 2)
        ann = await cluster.rtkit_client("ann")
        nia = await cluster.node_client("nia", rooms=("red",))
        assert {s["id"] for s in await node.call("fetchSockets")} == {ann, nia}
        assert [s["id"] for s in await manager.fetch_sockets(["red"])] == [nia]
        assert {"red", ann, nia} <= set(await node.call("allRooms"))
    await manager.redis.aclose()


@pytest.mark.parametrize(
    "topology", ["single", pytest.param("sentinel", marks=pytest.mark.sentinel)]
)
async def test_rtkit_instances_chat_through_the_node_adapter(
    topology: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """Two rtkit instances on ``adapter="node-redis"`` alone (one Redis, or a Sentinel
    setup): the chat works as with python-socketio's manager."""
    if topology == "sentinel":
        redis_url = str(request.getfixturevalue("redis_sentinel").url)
    else:
        redis_url = str(request.getfixturevalue("redis_url"))
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    options = {"key": key, "room_prefix": "room:"}  # (the same on both: room:R is R on the wire)
    one = make_server(redis_url, redis_prefix, adapter="node-redis", adapter_options=options)
    two = make_server(redis_url, redis_prefix, adapter="node-redis", adapter_options=options)
    async with serving(one) as url_one, serving(two) as url_two:
        chat_one, chat_two = Chat(url_one, one), Chat(url_two, two)
        try:
            ann = await chat_one.connect("u-ann", "Ann")
            bob = await chat_two.connect("u-bob", "Bob")
            await ann.client.join_room("lobby")
            await bob.client.join_room("lobby")
            await ann.client.send_message("lobby", "across")
            message = await bob.seen.wait_for("chat:message")
            assert (message.user_id, message.message) == ("u-ann", "across")
            await ann.seen.wait_for("room:user:joined", lambda e: e.user_id == "u-bob")
        finally:
            await chat_one.close()
            await chat_two.close()


async def test_the_cluster_heals_after_a_redis_restart(private_redis: PrivateRedis) -> None:
    key = f"rtkit-test-node-{uuid.uuid4().hex[:10]}"
    server = make_server(
        private_redis.url, "rtkit-node-fault:", adapter="node-redis", adapter_options={"key": key}
    )
    async with serving(server) as url, node_peer(private_redis.url, key) as node:
        cluster = Cluster(node, server, url, key)
        await _counted(node, 2)
        await cluster.rtkit_client("ann")
        nia = await cluster.node_client("nia")

        private_redis.stop()
        private_redis.start()
        await _counted(node, 2, timeout=30)  # both servers subscribed again

        await node.call("emit", event="after", args=[1])
        assert await node.wait_event("ann", "after") == [1]
        await server.sio.emit("back", 2, to=nia)
        assert await node.wait_event("nia", "back") == [2]


async def _counted(node: NodePeer, servers: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while await node.call("serverCount") < servers:  # noqa: ASYNC110  (Redis counts)
            await asyncio.sleep(0.05)


async def _until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  (state changed by the manager's listener)
            await asyncio.sleep(0.02)


async def _until_node(node: NodePeer, sid: str, check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check(await node.call("localRooms", sid=sid) or []):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
