"""The PresenceStore contract, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from presence_support import RecordingBus, Stores, stop_heartbeat

from rtkit import ManualClock
from rtkit.errors import Closed, ConfigurationError, PayloadTooLarge, ValidationError
from rtkit.presence import Departure, OnlineUser, PresenceCount, PresenceStore
from rtkit_testing import Backend, unique_name

pytestmark = pytest.mark.topologies  # also on the private cluster and Sentinel

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


@pytest.fixture
async def stores(backend: Backend, clock: ManualClock) -> AsyncIterator[Stores]:
    url = backend.url if backend.kind == "redis" else f"memory://{unique_name('presence')}"
    made = Stores(url, backend.prefix, clock=clock, ttl=10.0)
    yield made
    await made.close_all()


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


async def all_online(store: PresenceStore, limit: int = 100) -> list[OnlineUser]:
    users: list[OnlineUser] = []
    cursor = None
    while True:
        page = await store.online_users(cursor=cursor, limit=limit)
        users += page.items
        if page.next_cursor is None:
            return users
        cursor = page.next_cursor


async def test_a_user_is_online_from_the_first_connection_to_the_last(stores: Stores) -> None:
    presence = stores.make()
    assert await presence.connect("ada", "tab-1", username="Ada") is True
    assert await presence.connect("ada", "tab-2") is False
    assert await presence.is_online("ada")
    assert await presence.connections("ada") == ["tab-1", "tab-2"]
    assert await presence.count() == PresenceCount(users=1, connections=2)

    assert await presence.disconnect("tab-1") == Departure("ada", "tab-1", offline=False)
    assert await presence.is_online("ada")
    assert await presence.disconnect("tab-2") == Departure("ada", "tab-2", offline=True)
    assert not await presence.is_online("ada")
    assert await presence.connections("ada") == []
    assert await presence.count() == PresenceCount(users=0, connections=0)


async def test_disconnecting_an_unknown_sid_returns_none(stores: Stores) -> None:
    presence = stores.make()
    assert await presence.disconnect("nobody") is None
    await presence.connect("ada", "tab-1")
    await presence.disconnect("tab-1")
    assert await presence.disconnect("tab-1") is None


async def test_online_users_report_username_first_join_and_connections(
    stores: Stores, clock: ManualClock
) -> None:
    presence = stores.make()
    await presence.connect("ada", "a1", username="Ada")
    clock.advance(5)
    await presence.connect("bob", "b1")
    await presence.connect("ada", "a2", username="Ada L.")  # the latest username wins
    page = await presence.online_users()
    assert page.next_cursor is None
    assert page.items == [
        OnlineUser("ada", "Ada L.", T0, 2),
        OnlineUser("bob", None, T0 + 5, 1),
    ]


async def test_online_users_are_paged_in_user_id_order(stores: Stores) -> None:
    presence = stores.make()
    ids = [f"user-{i:02d}" for i in range(25)]
    for uid in reversed(ids):
        await presence.connect(uid, f"sid-{uid}")
    first = await presence.online_users(limit=10)
    assert [u.user_id for u in first.items] == ids[:10]
    assert first.next_cursor is not None
    # the cursor stays valid when the user it names goes offline
    await presence.disconnect(f"sid-{ids[9]}")
    second = await presence.online_users(cursor=first.next_cursor, limit=10)
    assert [u.user_id for u in second.items] == ids[10:20]
    third = await presence.online_users(cursor=second.next_cursor, limit=10)
    assert [u.user_id for u in third.items] == ids[20:]
    assert third.next_cursor is None
    assert len(await all_online(presence, limit=7)) == 24


async def test_transitions_are_published_not_every_connection(
    stores: Stores, bus: RecordingBus, clock: ManualClock
) -> None:
    presence = stores.make(bus=bus, instance_id="node-a")
    await presence.connect("ada", "a1", username="Ada")
    await presence.connect("ada", "a2")
    await presence.disconnect("a1")
    clock.advance(3)
    await presence.disconnect("a2")
    assert bus.events == [
        (
            "presence.online",
            {"user_id": "ada", "username": "Ada", "instance_id": "node-a", "time": T0},
        ),
        (
            "presence.offline",
            {"user_id": "ada", "username": "Ada", "instance_id": "node-a", "time": T0 + 3},
        ),
    ]


async def test_a_failing_bus_does_not_break_presence(stores: Stores) -> None:
    class BrokenBus:
        async def publish(self, name: str, data: dict[str, Any]) -> None:
            raise RuntimeError("bus down")

    presence = stores.make(bus=BrokenBus())
    assert await presence.connect("ada", "a1")
    assert await presence.disconnect("a1") == Departure("ada", "a1", True)


async def test_connecting_the_same_sid_again_is_a_no_op(stores: Stores) -> None:
    presence = stores.make()
    assert await presence.connect("ada", "a1")
    assert await presence.connect("ada", "a1", username="Ada") is False
    assert await presence.count() == PresenceCount(1, 1)
    assert (await presence.online_users()).items[0].username == "Ada"


async def test_a_sid_cannot_change_user(stores: Stores) -> None:
    presence = stores.make()
    await presence.connect("ada", "a1")
    with pytest.raises(ValidationError):
        await presence.connect("bob", "a1")
    assert not await presence.is_online("bob")
    assert await presence.count() == PresenceCount(1, 1)


@pytest.mark.parametrize(
    ("user_id", "sid", "error"),
    [
        ("", "s", ValidationError),
        ("u", "", ValidationError),
        ("x" * 257, "s", PayloadTooLarge),
        ("u", "s" * 257, PayloadTooLarge),
        (42, "s", ValidationError),
        ("u", None, ValidationError),
        ("bad\nid", "s", ValidationError),
        ("\ud800", "s", ValidationError),
    ],
)
async def test_bad_ids_are_rejected_and_nothing_changes(
    stores: Stores, user_id: Any, sid: Any, error: type[Exception]
) -> None:
    presence = stores.make()
    with pytest.raises(error):
        await presence.connect(user_id, sid)
    assert await presence.count() == PresenceCount(0, 0)


async def test_bad_arguments_are_rejected(stores: Stores) -> None:
    presence = stores.make()
    with pytest.raises(ValidationError):
        await presence.connect("u", "s", username="")
    with pytest.raises(ValidationError):
        await presence.connect("u", "s", meta={"f": object()})
    with pytest.raises(PayloadTooLarge):
        await presence.connect("u", "s", meta={"big": "x" * 5000})
    for limit in (0, 1001, "10", True):
        with pytest.raises(ValidationError):
            await presence.online_users(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await presence.online_users(cursor="")
    with pytest.raises(ValidationError):
        await presence.disconnect(7)  # type: ignore[arg-type]
    assert await presence.count() == PresenceCount(0, 0)


async def test_meta_is_kept_per_connection(stores: Stores) -> None:
    presence = stores.make()
    await presence.connect("ada", "a1", meta={"agent": "firefox", "n": 1})
    assert await presence.meta("a1") == {"agent": "firefox", "n": 1}
    await presence.connect("ada", "a1", meta={})
    assert await presence.meta("a1") is None
    await presence.connect("ada", "a2", meta={"agent": "curl"})
    await presence.disconnect("a2")
    assert await presence.meta("a2") is None


async def test_instances_share_presence(stores: Stores) -> None:
    a, b = stores.make(instance_id="node-a"), stores.make(instance_id="node-b")
    assert await a.connect("ada", "a1")
    assert not await b.connect("ada", "b1")
    await b.connect("bob", "b2")
    for store in (a, b):
        assert await store.count() == PresenceCount(2, 3)
        assert await store.connections("ada") == ["a1", "b1"]
    # a connection is removed through its own instance only
    assert await b.disconnect("a1") is None
    assert await a.disconnect("a1") == Departure("ada", "a1", False)


async def test_a_crashed_instance_is_purged_after_its_lease_expires(
    stores: Stores, bus: RecordingBus, clock: ManualClock
) -> None:
    alive = stores.make(instance_id="node-a", bus=bus)
    crashed = stores.make(instance_id="node-b")
    await alive.connect("ada", "a1")
    await crashed.connect("ada", "b1")
    await crashed.connect("bob", "b2", username="Bob")
    await crashed.connect("bob", "b3")
    await stop_heartbeat(crashed)
    clock.advance(5)
    assert await alive.purge_expired() == []  # node-b's lease (ttl 10 s) still holds
    clock.advance(5)
    assert await alive.purge_expired() == [
        Departure("ada", "b1", offline=False),
        Departure("bob", "b2", offline=False),
        Departure("bob", "b3", offline=True),
    ]
    assert await alive.count() == PresenceCount(1, 1)
    assert await alive.connections("ada") == ["a1"]
    assert bus.events == [
        (
            "presence.online",
            {"user_id": "ada", "username": None, "instance_id": "node-a", "time": T0},
        ),
        (
            "presence.offline",
            {"user_id": "bob", "username": "Bob", "instance_id": "node-b", "time": T0 + 10},
        ),
    ]
    clock.advance(60)  # the purging instance renewed its own lease; it is not purged
    assert await alive.purge_expired() == []
    assert await alive.is_online("ada")


async def test_close_removes_the_instance_connections_at_once(
    stores: Stores, bus: RecordingBus
) -> None:
    a = stores.make(instance_id="node-a")
    b = stores.make(instance_id="node-b", bus=bus)
    await a.connect("ada", "a1")
    await b.connect("ada", "b1")
    await b.connect("bob", "b2")
    await b.close()
    await b.close()  # twice is fine
    assert await a.count() == PresenceCount(1, 1)
    assert [(name, data["user_id"]) for name, data in bus.events] == [
        ("presence.online", "bob"),
        ("presence.offline", "bob"),
    ]


async def test_the_janitor_purges_crashed_instances_in_real_time(backend: Backend) -> None:
    url = backend.url if backend.kind == "redis" else f"memory://{unique_name('presence')}"
    stores = Stores(url, backend.prefix, ttl=0.3)
    try:
        crashed = stores.make()
        await crashed.connect("ghost", "g1")  # takes a lease
        await stop_heartbeat(crashed)  # and crashes
        async with stores.make() as alive:
            await alive.connect("ada", "a1")
            deadline = asyncio.get_running_loop().time() + 10
            while await alive.is_online("ghost"):
                assert asyncio.get_running_loop().time() < deadline, "ghost never purged"
                await asyncio.sleep(0.05)
            assert await alive.is_online("ada")
    finally:
        await stores.close_all()


async def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        PresenceStore.from_url("mongodb://x")
    with pytest.raises(ConfigurationError):
        PresenceStore(ttl=0)
    with pytest.raises(ConfigurationError):
        PresenceStore.from_url("memory://", prefix="bad prefix")
    for bad in ("has:colon", "", "-dash-first", "x" * 65, 7):
        with pytest.raises(ConfigurationError):
            PresenceStore(instance_id=bad)  # type: ignore[arg-type]
    assert len(PresenceStore().instance_id) == 36
    assert PresenceStore(instance_id="node-1.eu_west").instance_id == "node-1.eu_west"


async def test_an_instance_that_was_taken_for_dead_says_so_and_puts_its_connections_back(
    stores: Stores, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    paused = stores.make(instance_id="node-a")
    other = stores.make(instance_id="node-b")
    await paused.connect("ada", "a1")
    await stop_heartbeat(paused)
    clock.advance(11)  # node-a missed its heartbeats for longer than the ttl
    assert await other.purge_expired() == [Departure("ada", "a1", True)]
    with caplog.at_level("WARNING", logger="rtkit.presence"):
        assert await paused.purge_expired() == []
    assert "node-a found its lease gone" in caplog.text
    # the instance is alive and still holds ada's connection: it put it back
    assert await other.connections("ada") == ["a1"]


# -- the shared shape: memory names, life cycle, options ------------------------------------


async def test_memory_names_share_by_name_and_prefix() -> None:
    name = unique_name("presence")
    a = PresenceStore.from_url(f"memory://{name}", instance_id="node-a")
    b = PresenceStore.from_url(f"memory://{name}", instance_id="node-b")
    other_prefix = PresenceStore.from_url(f"memory://{name}", prefix="app2:")
    other_name = PresenceStore.from_url(f"memory://{name}-2")
    private = [PresenceStore.from_url("memory://"), PresenceStore()]
    try:
        await a.connect("ada", "a1")
        await b.connect("bob", "b1")
        for store in (a, b):
            assert await store.count() == PresenceCount(2, 2)
            assert await store.is_online("ada")
        for store in (other_prefix, other_name, *private):
            assert not await store.is_online("ada")
            assert await store.count() == PresenceCount(0, 0)
        await private[0].connect("eve", "e1")
        assert not await private[1].is_online("eve")
        assert not await a.is_online("eve")
    finally:
        for store in (a, b, other_prefix, other_name, *private):
            await store.close()


async def test_every_operation_raises_closed_after_close(stores: Stores) -> None:
    used = stores.make(instance_id="node-a", ttl=7.0)
    await used.connect("ada", "a1")
    never_used = stores.make()
    for store in (used, never_used):
        await store.close()
        await store.close()
        assert store.closed
        operations = [
            store.start(),
            store.connect("ada", "a2"),
            store.disconnect("a1"),
            store.is_online("ada"),
            store.online_users(),
            store.count(),
            store.connections("ada"),
            store.meta("a1"),
            store.purge_expired(),
        ]
        for operation in operations:
            with pytest.raises(Closed):
                await operation
    assert (used.instance_id, used.ttl) == ("node-a", 7.0)  # still readable


async def test_a_store_used_without_start_heartbeats(backend: Backend) -> None:
    url = backend.url if backend.kind == "redis" else f"memory://{unique_name('presence')}"
    stores = Stores(url, backend.prefix, ttl=0.3)
    try:
        idle = stores.make()
        await idle.connect("ada", "a1")  # no start(): the first operation starts it
        async with stores.make() as other:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.5  # more than ttl + ttl / 3, several times over
            while loop.time() < end:
                assert await other.purge_expired() == []
                assert await other.is_online("ada")
                await asyncio.sleep(0.05)
            await stop_heartbeat(idle)
            deadline = loop.time() + 10
            while await other.is_online("ada"):
                assert loop.time() < deadline, "ada never purged"
                await asyncio.sleep(0.05)
    finally:
        await stores.close_all()


async def test_purge_expired_on_a_new_store_is_the_pass_that_starts_it(
    stores: Stores, clock: ManualClock
) -> None:
    crashed = stores.make(instance_id="node-b")
    await crashed.connect("ada", "b1")
    await stop_heartbeat(crashed)
    clock.advance(10)
    fresh = stores.make(instance_id="node-a")
    assert await fresh.purge_expired() == [Departure("ada", "b1", offline=True)]
    assert await fresh.purge_expired() == []


async def test_from_url_options_go_where_they_belong(backend: Backend) -> None:
    clock = ManualClock(start=T0)
    store = PresenceStore.from_url(
        backend.url, prefix=backend.prefix, clock=clock, instance_id="node-a", ttl=5.0
    )
    try:
        assert (store.instance_id, store.ttl) == ("node-a", 5.0)
        await store.connect("ada", "a1")
        assert (await store.online_users()).items == [OnlineUser("ada", None, T0, 1)]
    finally:
        await store.close()
    with pytest.raises(ConfigurationError, match="unknown option"):
        PresenceStore.from_url(backend.url, prefix=backend.prefix, no_such_option=1)
    if backend.kind == "memory":
        # memory has no round trips: the Redis option is ignored, one call fits every URL
        await PresenceStore.from_url("memory://", timeout=1.0).close()
    else:
        with pytest.raises(ConfigurationError, match="timeout"):
            PresenceStore.from_url(backend.url, prefix=backend.prefix, timeout=0)
        timed = PresenceStore.from_url(backend.url, prefix=backend.prefix, timeout=1.5)
        assert timed._backend._handle.timeout == 1.5  # type: ignore[attr-defined]
        await timed.close()


async def test_a_backend_object_can_be_given() -> None:
    from rtkit.presence.backends.memory import MemoryPresenceBackend

    backend = MemoryPresenceBackend()
    async with PresenceStore(backend, instance_id="node-a") as store:
        await store.connect("ada", "a1")
        assert await store.is_online("ada")
        assert await backend.connections("ada") == ["a1"]
