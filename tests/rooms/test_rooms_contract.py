"""The RoomManager contract, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rtkit import ManualClock
from rtkit.errors import Closed, ConfigurationError, PayloadTooLarge, ValidationError
from rtkit.rooms import RoomDeparture, RoomInfo, RoomManager
from rtkit_testing import Backend, unique_name

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel

T0 = 1_700_000_000.0

MakeRooms = Callable[..., RoomManager]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


async def stop_heartbeat(manager: RoomManager) -> None:
    """What a crash (SIGKILL) or a long pause does to an instance: nobody renews its lease.

    A manager heartbeats from its first operation on; this stops that, and
    leaves its memberships and its lease behind, without closing it.
    """
    await manager._janitor.stop()


def shared_url(backend: Backend) -> str:
    return backend.url if backend.kind == "redis" else f"memory://{unique_name('rooms')}"


@pytest.fixture
async def make_rooms(backend: Backend, clock: ManualClock) -> AsyncIterator[MakeRooms]:
    """Makes managers (server instances) sharing one backend; closes them afterwards."""
    url = shared_url(backend)
    made: list[RoomManager] = []

    def make(**kwargs: Any) -> RoomManager:
        kwargs = {"clock": clock, "ttl": 10.0, **kwargs}
        manager = RoomManager.from_url(url, prefix=backend.prefix, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.close()


async def test_joining_reports_whether_the_user_is_new_to_the_room(make_rooms: MakeRooms) -> None:
    rooms = make_rooms()
    assert await rooms.join("lobby", "ada", "tab-1") is True
    assert await rooms.join("lobby", "ada", "tab-2") is False  # a second tab
    assert await rooms.join("lobby", "ada", "tab-1") is False  # again: a no-op
    assert await rooms.join("lobby", "bob", "bob-1") is True
    assert (await rooms.members("lobby")).items == ["ada", "bob"]
    assert await rooms.is_member("lobby", "ada")
    assert not await rooms.is_member("lobby", "eve")
    assert await rooms.rooms_of("ada") == ["lobby"]


async def test_a_user_leaves_a_room_with_their_last_connection_in_it(
    make_rooms: MakeRooms,
) -> None:
    rooms = make_rooms()
    await rooms.join("lobby", "ada", "tab-1")
    await rooms.join("lobby", "ada", "tab-2")
    assert await rooms.leave("lobby", "tab-1") is False
    assert await rooms.is_member("lobby", "ada")
    assert await rooms.leave("lobby", "tab-2") is True
    assert not await rooms.is_member("lobby", "ada")
    assert await rooms.leave("lobby", "tab-2") is False  # not in it any more
    assert await rooms.leave("lobby", "unknown") is False


async def test_empty_rooms_disappear(make_rooms: MakeRooms, clock: ManualClock) -> None:
    rooms = make_rooms()
    await rooms.join("lobby", "ada", "a1")
    clock.advance(2)
    await rooms.join("games", "ada", "a1")
    await rooms.join("games", "bob", "b1")
    assert (await rooms.rooms()).items == [
        RoomInfo("games", 2, T0 + 2),
        RoomInfo("lobby", 1, T0),
    ]
    assert await rooms.count() == 2
    await rooms.leave("lobby", "a1")
    assert [r.room_id for r in (await rooms.rooms()).items] == ["games"]
    assert await rooms.count() == 1
    assert (await rooms.members("lobby")).items == []
    clock.advance(1)
    await rooms.join("lobby", "bob", "b1")  # a new room: a new creation time
    assert (await rooms.rooms()).items[1] == RoomInfo("lobby", 1, T0 + 3)


async def test_leave_all_on_disconnect(make_rooms: MakeRooms) -> None:
    rooms = make_rooms()
    for room in ("c", "a", "b"):
        await rooms.join(room, "ada", "a1")
    await rooms.join("b", "ada", "a2")
    assert await rooms.leave_all("a1") == ["a", "c"]  # still in b through a2
    assert await rooms.rooms_of("ada") == ["b"]
    assert await rooms.leave_all("a1") == []
    assert await rooms.leave_all("a2") == ["b"]
    assert (await rooms.rooms()).items == []
    assert await rooms.count() == 0


async def test_members_and_rooms_are_paged(make_rooms: MakeRooms) -> None:
    rooms = make_rooms()
    users = [f"u{i:02d}" for i in range(23)]
    for uid in reversed(users):
        await rooms.join("big", uid, f"s-{uid}")
        await rooms.join(f"room-{uid}", uid, f"s-{uid}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await rooms.members("big", cursor=cursor, limit=10)
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == users
    first = await rooms.rooms(limit=20)
    assert [r.room_id for r in first.items] == ["big"] + [f"room-{u}" for u in users[:19]]
    rest = await rooms.rooms(cursor=first.next_cursor, limit=20)
    assert [r.room_id for r in rest.items] == [f"room-{u}" for u in users[19:]]
    assert rest.next_cursor is None


async def test_a_sid_cannot_change_user(make_rooms: MakeRooms) -> None:
    rooms = make_rooms()
    await rooms.join("lobby", "ada", "s1")
    with pytest.raises(ValidationError):
        await rooms.join("other", "bob", "s1")
    assert (await rooms.rooms()).items == [RoomInfo("lobby", 1, T0)]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", "u", "s"), ValidationError),
        (("r", "", "s"), ValidationError),
        (("r", "u", ""), ValidationError),
        (("r" * 257, "u", "s"), PayloadTooLarge),
        ((1, "u", "s"), ValidationError),
        (("r", None, "s"), ValidationError),
        (("r\x00", "u", "s"), ValidationError),
    ],
)
async def test_bad_ids_are_rejected_and_nothing_changes(
    make_rooms: MakeRooms, args: tuple[Any, ...], error: type[Exception]
) -> None:
    rooms = make_rooms()
    with pytest.raises(error):
        await rooms.join(*args)
    assert (await rooms.rooms()).items == []
    with pytest.raises(ValidationError):
        await rooms.members("r", limit=0)
    with pytest.raises(ValidationError):
        await rooms.leave_all("")


async def test_instances_share_rooms(make_rooms: MakeRooms) -> None:
    a, b = make_rooms(instance_id="node-a"), make_rooms(instance_id="node-b")
    assert await a.join("lobby", "ada", "s1") is True
    assert await b.join("lobby", "ada", "s1") is False  # same sid name, other instance
    assert await b.join("lobby", "bob", "s2") is True
    assert (await a.members("lobby")).items == ["ada", "bob"]
    assert await a.leave("lobby", "s2") is False  # s2 is node-b's connection
    assert await a.leave("lobby", "s1") is False  # ada is still there through node-b
    assert await b.leave_all("s1") == ["lobby"]
    assert (await a.members("lobby")).items == ["bob"]


async def test_a_crashed_instance_memberships_are_purged(
    make_rooms: MakeRooms, clock: ManualClock
) -> None:
    alive, crashed = make_rooms(instance_id="node-a"), make_rooms(instance_id="node-b")
    await alive.join("lobby", "ada", "a1")
    await crashed.join("lobby", "ada", "b1")
    await crashed.join("lobby", "bob", "b2")
    await crashed.join("lobby", "bob", "b3")
    await crashed.join("games", "bob", "b3")
    await stop_heartbeat(crashed)
    clock.advance(9.5)
    assert await alive.purge_expired() == []
    clock.advance(0.5)
    assert await alive.purge_expired() == [
        RoomDeparture("games", "bob", "b3", left=True),
        RoomDeparture("lobby", "ada", "b1", left=False),
        RoomDeparture("lobby", "bob", "b2", left=False),
        RoomDeparture("lobby", "bob", "b3", left=True),
    ]
    assert (await alive.rooms()).items == [RoomInfo("lobby", 1, T0)]
    assert await alive.rooms_of("bob") == []


class Published:
    """An event sink that records what a manager publishes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, name: str, data: dict[str, Any], /) -> None:
        self.events.append((name, data))


async def test_a_purge_announces_who_left_a_room(make_rooms: MakeRooms, clock: ManualClock) -> None:
    bus = Published()
    alive, crashed = make_rooms(instance_id="node-a", bus=bus), make_rooms(instance_id="node-b")
    await alive.join("lobby", "ada", "a1")
    await crashed.join("lobby", "ada", "b1")  # ada stays through node-a
    await crashed.join("lobby", "bob", "b2")
    await crashed.join("games", "bob", "b2")
    await stop_heartbeat(crashed)
    clock.advance(10.0)
    await alive.purge_expired()
    assert bus.events == [
        ("rooms.left", {"room_id": "games", "user_id": "bob"}),
        ("rooms.left", {"room_id": "lobby", "user_id": "bob"}),
    ]
    await alive.close()  # its own memberships go quietly: their connections announced them
    assert len(bus.events) == 2


async def test_close_removes_the_instance_memberships_at_once(make_rooms: MakeRooms) -> None:
    a, b = make_rooms(instance_id="node-a"), make_rooms(instance_id="node-b")
    await a.join("lobby", "ada", "a1")
    await b.join("lobby", "bob", "b1")
    await b.join("games", "bob", "b1")
    await b.close()
    assert (await a.rooms()).items == [RoomInfo("lobby", 1, T0)]


async def test_the_janitor_purges_crashed_instances_in_real_time(backend: Backend) -> None:
    url = shared_url(backend)
    crashed = RoomManager.from_url(url, prefix=backend.prefix, ttl=0.3)
    try:
        await crashed.join("lobby", "ghost", "g1")  # takes a lease
        await stop_heartbeat(crashed)  # and crashes
        async with RoomManager.from_url(url, prefix=backend.prefix, ttl=0.3) as alive:
            deadline = asyncio.get_running_loop().time() + 10
            while await alive.is_member("lobby", "ghost"):
                assert asyncio.get_running_loop().time() < deadline, "ghost never purged"
                await asyncio.sleep(0.05)
    finally:
        await crashed.close()


async def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        RoomManager.from_url("amqp://guest:guest@localhost/")
    with pytest.raises(ConfigurationError):
        RoomManager(ttl=-1)
    with pytest.raises(ConfigurationError):
        RoomManager(instance_id="")
    with pytest.raises(ConfigurationError):
        RoomManager(instance_id="a:b")  # ':' separates the parts of its Redis keys
    with pytest.raises(ConfigurationError):
        RoomManager.from_url("memory://", prefix="bad prefix")


async def test_an_instance_that_was_taken_for_dead_says_so_and_puts_its_memberships_back(
    make_rooms: MakeRooms, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    paused, other = make_rooms(instance_id="node-a"), make_rooms(instance_id="node-b")
    await paused.join("lobby", "ada", "a1")
    await stop_heartbeat(paused)
    clock.advance(11)
    assert await other.purge_expired() == [RoomDeparture("lobby", "ada", "a1", True)]
    with caplog.at_level("WARNING", logger="rtkit.rooms"):
        assert await paused.purge_expired() == []
    assert "node-a found its lease gone" in caplog.text
    # the instance is alive and still holds ada's membership: it put it back
    assert (await other.members("lobby")).items == ["ada"]


# -- the shared shape: memory names, life cycle, options ------------------------------------


async def test_memory_names_share_by_name_and_prefix() -> None:
    name = unique_name("rooms")
    a = RoomManager.from_url(f"memory://{name}", instance_id="node-a")
    b = RoomManager.from_url(f"memory://{name}", instance_id="node-b")
    other_prefix = RoomManager.from_url(f"memory://{name}", prefix="app2:")
    other_name = RoomManager.from_url(f"memory://{name}-2")
    private = [RoomManager.from_url("memory://"), RoomManager()]
    try:
        await a.join("lobby", "ada", "a1")
        await b.join("lobby", "bob", "b1")
        for manager in (a, b):
            assert (await manager.members("lobby")).items == ["ada", "bob"]
            assert await manager.count() == 1
        for manager in (other_prefix, other_name, *private):
            assert not await manager.is_member("lobby", "ada")
            assert await manager.count() == 0
        await private[0].join("lobby", "eve", "e1")
        assert not await private[1].is_member("lobby", "eve")
        assert not await a.is_member("lobby", "eve")
    finally:
        for manager in (a, b, other_prefix, other_name, *private):
            await manager.close()


async def test_every_operation_raises_closed_after_close(make_rooms: MakeRooms) -> None:
    used = make_rooms(instance_id="node-a", ttl=7.0)
    await used.join("lobby", "ada", "a1")
    never_used = make_rooms()
    for manager in (used, never_used):
        await manager.close()
        await manager.close()
        assert manager.closed
        operations = [
            manager.start(),
            manager.join("lobby", "ada", "a2"),
            manager.leave("lobby", "a1"),
            manager.leave_all("a1"),
            manager.members("lobby"),
            manager.rooms(),
            manager.count(),
            manager.rooms_of("ada"),
            manager.is_member("lobby", "ada"),
            manager.purge_expired(),
        ]
        for operation in operations:
            with pytest.raises(Closed):
                await operation
    assert (used.instance_id, used.ttl) == ("node-a", 7.0)  # still readable


async def test_a_manager_used_without_start_heartbeats(backend: Backend) -> None:
    url = shared_url(backend)
    idle = RoomManager.from_url(url, prefix=backend.prefix, ttl=0.3)
    try:
        await idle.join("lobby", "ada", "a1")  # no start(): the first operation starts it
        async with RoomManager.from_url(url, prefix=backend.prefix, ttl=0.3) as other:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.5  # more than ttl + ttl / 3, several times over
            while loop.time() < end:
                assert await other.purge_expired() == []
                assert await other.is_member("lobby", "ada")
                await asyncio.sleep(0.05)
            await stop_heartbeat(idle)
            deadline = loop.time() + 10
            while await other.is_member("lobby", "ada"):
                assert loop.time() < deadline, "ada never purged"
                await asyncio.sleep(0.05)
    finally:
        await idle.close()


async def test_purge_expired_on_a_new_manager_is_the_pass_that_starts_it(
    make_rooms: MakeRooms, clock: ManualClock
) -> None:
    crashed = make_rooms(instance_id="node-b")
    await crashed.join("lobby", "ada", "b1")
    await stop_heartbeat(crashed)
    clock.advance(10)
    fresh = make_rooms(instance_id="node-a")
    assert await fresh.purge_expired() == [RoomDeparture("lobby", "ada", "b1", left=True)]
    assert await fresh.purge_expired() == []


async def test_from_url_options_go_where_they_belong(backend: Backend) -> None:
    clock = ManualClock(start=T0)
    manager = RoomManager.from_url(
        backend.url, prefix=backend.prefix, clock=clock, instance_id="node-a", ttl=5.0
    )
    try:
        assert (manager.instance_id, manager.ttl) == ("node-a", 5.0)
        await manager.join("lobby", "ada", "a1")
        assert (await manager.rooms()).items == [RoomInfo("lobby", 1, T0)]
    finally:
        await manager.close()
    with pytest.raises(ConfigurationError, match="unknown option"):
        RoomManager.from_url(backend.url, prefix=backend.prefix, presence=object())
    if backend.kind == "memory":
        # memory has no round trips: the Redis option is ignored, one call fits every URL
        await RoomManager.from_url("memory://", timeout=1.0).close()
    else:
        with pytest.raises(ConfigurationError, match="timeout"):
            RoomManager.from_url(backend.url, prefix=backend.prefix, timeout=-1)
        timed = RoomManager.from_url(backend.url, prefix=backend.prefix, timeout=1.5)
        assert timed._backend._handle.timeout == 1.5  # type: ignore[attr-defined]
        await timed.close()


async def test_a_backend_object_can_be_given() -> None:
    from rtkit.rooms.backends.memory import MemoryRoomsBackend

    backend = MemoryRoomsBackend()
    async with RoomManager(backend, instance_id="node-a") as rooms:
        await rooms.join("lobby", "ada", "a1")
        assert await backend.rooms_of("ada") == ["lobby"]
