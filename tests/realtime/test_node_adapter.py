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
from realtime_support import make_server, serving, token_for

from rtkit.realtime import RealtimeServer
from rtkit.realtime.managers.node_redis import NodeRedisManager

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
    server = make_server(redis_url, redis_prefix, adapter="node-redis", adapter_key=key)
    async with serving(server) as url, node_peer(redis_url, key) as node:
        manager = server.sio.manager
        assert isinstance(manager, NodeRedisManager)
        async with asyncio.timeout(15):
            while await manager.server_count() < 2:
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
        ("done", []),
    ]
    assert bob_events == [
        ("to-all", [{"n": 1}]),
        ("to-red", ["x", 2.5]),
        ("to-bob", [{"bytes": [1, 2]}]),
        ("done", []),
    ]


async def _events(node: NodePeer, name: str) -> list[tuple[str, list[Any]]]:
    return [(e["event"], e["args"]) for e in await node.events(name)]
