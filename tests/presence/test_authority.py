"""Each instance is the authority on its connections: the heartbeat puts the backend right.

On every backend. What a lost reply, a lost departure or a lost data set leaves in
the backend is made here by calling the backend the way the lost script would have
(or by deleting the data); ``test_stalls.py`` makes the same faults with a real,
frozen or restarted, redis-server. Also the room limit, atomic with the join.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from presence_support import RecordingBus, lose_data

from rtkit import ManualClock, PresenceStore, RoomManager
from rtkit.errors import TooManyRooms, ValidationError
from rtkit.presence import Departure, OnlineUser, PresenceCount
from rtkit.rooms import RoomDeparture, RoomInfo
from rtkit_testing import Backend, unique_name

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel

T0 = 1_700_000_000.0
TTL = 10.0


class Node:
    """One server instance: its presence store and room manager on a shared backend."""

    def __init__(self, url: str, prefix: str, clock: ManualClock, iid: str) -> None:
        self.bus = RecordingBus()
        common: dict[str, Any] = {"prefix": prefix, "clock": clock, "ttl": TTL, "instance_id": iid}
        self.presence = PresenceStore.from_url(url, bus=self.bus, **common)
        self.rooms = RoomManager.from_url(url, bus=self.bus, **common)

    async def close(self) -> None:
        await self.presence.close()
        await self.rooms.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


@pytest.fixture
def url(backend: Backend) -> str:
    return backend.url if backend.kind == "redis" else f"memory://{unique_name('authority')}"


@pytest.fixture
async def nodes(backend: Backend, url: str, clock: ManualClock) -> AsyncIterator[list[Node]]:
    made = [Node(url, backend.prefix, clock, iid) for iid in ("node-a", "node-b")]
    yield made
    for node in made:
        await node.close()


# -- presence ---------------------------------------------------------------------------------


async def test_a_connect_whose_reply_was_lost_is_undone_by_the_heartbeat(
    nodes: list[Node], clock: ManualClock
) -> None:
    a, b = nodes
    await a.presence.connect("ada", "a1")
    # the script ran but the caller never heard back: the store does not hold g1
    await a.presence._backend.connect("node-a", "ghost", "g1", "Ghost", None, None, TTL)
    assert await b.presence.is_online("ghost")
    assert await a.presence.purge_expired() == [Departure("ghost", "g1", offline=True)]
    assert not await b.presence.is_online("ghost")
    assert await b.presence.count() == PresenceCount(1, 1)
    assert a.bus.names()[-1] == ("presence.offline", "ghost")
    assert await a.presence.purge_expired() == []  # in step again: nothing more to do


async def test_a_disconnect_the_backend_never_got_is_completed_by_the_heartbeat(
    nodes: list[Node],
) -> None:
    a, b = nodes
    await a.presence.connect("ada", "a1")
    await a.presence.connect("ada", "a2")
    await b.presence.connect("bob", "b1")
    # a connect of a2 the backend missed, then a disconnect of a1 it missed
    lost = await a.presence._backend.disconnect("node-a", "a2", None)
    assert lost is not None
    a.presence._hold("a1", None)
    assert await a.presence.purge_expired() == [Departure("ada", "a1", offline=False)]
    assert await b.presence.connections("ada") == ["a2"]  # a2 was put back


async def test_what_the_backend_lost_is_put_back(
    backend: Backend, nodes: list[Node], clock: ManualClock
) -> None:
    a, b = nodes
    await a.presence.connect("ada", "a1", username="Ada", meta={"device": "phone"})
    await a.presence.connect("ada", "a2")
    await a.presence.connect("ada", "a2", username="Ada L.")  # the latest name wins
    await b.presence.connect("bob", "b1", username="Bob")
    await a.rooms.join("lobby", "ada", "a1")
    await a.rooms.join("games", "ada", "a1")
    await b.rooms.join("lobby", "bob", "b1")
    lose_data(backend, a.presence, a.rooms)
    assert await a.presence.count() == PresenceCount(0, 0)

    clock.advance(3)
    for node in nodes:
        assert await node.presence.purge_expired() == []
        assert await node.rooms.purge_expired() == []
    assert (await a.presence.online_users()).items == [
        OnlineUser("ada", "Ada L.", T0 + 3, 2),
        OnlineUser("bob", "Bob", T0 + 3, 1),
    ]
    assert await b.presence.connections("ada") == ["a1", "a2"]
    assert await a.presence.meta("a1") == {"device": "phone"}
    assert (await b.rooms.rooms()).items == [
        RoomInfo("games", 1, T0 + 3),
        RoomInfo("lobby", 2, T0 + 3),
    ]
    assert await b.rooms.rooms_of("ada") == ["games", "lobby"]
    online = [event for event in a.bus.events if event[0] == "presence.online"][-1]
    assert online[1] == {
        "user_id": "ada",
        "username": "Ada L.",
        "instance_id": "node-a",
        "time": T0 + 3,
    }
    # and the backend is back in step: departures work as before
    assert await a.presence.disconnect("a1") == Departure("ada", "a1", offline=False)
    assert await a.rooms.leave_all("a1") == ["games", "lobby"]


async def test_a_restarted_instance_with_the_same_id_removes_what_its_predecessor_left(
    backend: Backend, url: str, nodes: list[Node], clock: ManualClock
) -> None:
    a, b = nodes
    await a.presence.connect("ada", "a1")
    await a.rooms.join("lobby", "ada", "a1")
    await a.presence._janitor.stop()  # node-a crashes...
    await a.rooms._janitor.stop()
    again = Node(url, backend.prefix, clock, "node-a")  # ...and comes back at once
    try:
        # its first pass finds the backend holding what it does not: gone at once
        assert await again.presence.purge_expired() == [Departure("ada", "a1", offline=True)]
        assert await again.rooms.purge_expired() == [RoomDeparture("lobby", "ada", "a1", True)]
        assert not await b.presence.is_online("ada")
    finally:
        await again.close()


# -- rooms ------------------------------------------------------------------------------------


async def test_a_join_whose_reply_was_lost_is_undone_by_the_heartbeat(nodes: list[Node]) -> None:
    a, b = nodes
    await a.rooms.join("lobby", "ada", "a1")
    await a.rooms._backend.join("node-a", "secret", "ada", "a1", None, TTL)
    await a.rooms._backend.join("node-a", "lobby", "eve", "e1", None, TTL)
    assert await b.rooms.rooms_of("ada") == ["lobby", "secret"]
    assert await a.rooms.purge_expired() == [
        RoomDeparture("lobby", "eve", "e1", left=True),
        RoomDeparture("secret", "ada", "a1", left=True),
    ]
    assert await b.rooms.rooms_of("ada") == ["lobby"]
    assert (await b.rooms.members("lobby")).items == ["ada"]
    assert [d["room_id"] for name, d in a.bus.events if name == "rooms.left"] == [
        "lobby",
        "secret",
    ]


async def test_a_leave_the_backend_never_got_is_completed_by_the_heartbeat(
    nodes: list[Node],
) -> None:
    a, b = nodes
    for room in ("lobby", "games"):
        await a.rooms.join(room, "ada", "a1")
    await b.rooms.join("games", "bob", "b1")
    a.rooms._exit("a1", "games")  # the instance let go; the backend never heard
    assert await a.rooms.purge_expired() == [RoomDeparture("games", "ada", "a1", left=True)]
    assert (await b.rooms.members("games")).items == ["bob"]
    assert await b.rooms.rooms_of("ada") == ["lobby"]


async def test_join_with_max_rooms_refuses_past_the_limit_and_changes_nothing(
    nodes: list[Node],
) -> None:
    a, b = nodes
    for i in range(3):
        assert await a.rooms.join(f"r{i}", "ada", "a1", max_rooms=3)
    with pytest.raises(TooManyRooms, match="3 rooms"):
        await a.rooms.join("r3", "ada", "a1", max_rooms=3)
    with pytest.raises(TooManyRooms):
        await b.rooms.join("r3", "ada", "b1", max_rooms=3)  # per user, on every instance
    assert await a.rooms.rooms_of("ada") == ["r0", "r1", "r2"]
    assert await a.rooms.count() == 3
    # a room the user is in already is no new room
    assert await b.rooms.join("r1", "ada", "b1", max_rooms=3) is False
    assert await a.rooms.join("r1", "ada", "a1", max_rooms=3) is False
    assert await a.rooms.join("r3", "ada", "a1", max_rooms=4) is True
    assert await a.rooms.join("r4", "ada", "a1") is True  # no limit given: none applies
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValidationError):
            await a.rooms.join("r5", "ada", "a1", max_rooms=bad)  # type: ignore[arg-type]
    assert await a.rooms.purge_expired() == []  # the refusals left the instance in step


async def test_max_rooms_of_zero_refuses_every_new_room(nodes: list[Node]) -> None:
    a, _ = nodes
    with pytest.raises(TooManyRooms):
        await a.rooms.join("lobby", "ada", "a1", max_rooms=0)
    assert await a.rooms.rooms_of("ada") == []


async def test_concurrent_joins_never_pass_the_limit(nodes: list[Node]) -> None:
    a, b = nodes
    joins = [
        node.rooms.join(f"room-{i}", "ada", f"{node.rooms.instance_id}-s{i % 3}", max_rooms=100)
        for i in range(120)
        for node in (a if i % 2 else b,)
    ]
    results = await asyncio.gather(*joins, return_exceptions=True)
    refused = [r for r in results if isinstance(r, TooManyRooms)]
    assert [r for r in results if isinstance(r, BaseException) and r not in refused] == []
    assert results.count(True) == 100
    assert len(refused) == 20
    assert len(await a.rooms.rooms_of("ada")) == 100
    assert await a.rooms.count() == 100


async def test_a_departure_wins_over_an_arrival_of_the_same_sid_still_in_flight(
    nodes: list[Node],
) -> None:
    # a late room:join (or a connect) of a connection that is going away: the
    # departure starts while the arrival's script is still on its way
    a, b = nodes
    join = asyncio.create_task(a.rooms.join("lobby", "ada", "a1"))
    connect = asyncio.create_task(a.presence.connect("ada", "a1"))
    await asyncio.sleep(0)  # both are in flight (on Redis: sent, not answered)
    await a.rooms.leave_all("a1")
    await a.presence.disconnect("a1")
    await asyncio.gather(join, connect)
    for node in nodes:  # heartbeats: nothing of a1 is held, so nothing comes back
        await node.presence.purge_expired()
        await node.rooms.purge_expired()
    assert await b.rooms.rooms_of("ada") == []
    assert not await b.presence.is_online("ada")
