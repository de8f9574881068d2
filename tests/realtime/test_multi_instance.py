"""Two ``rtkit serve`` processes on one Redis, or on a Redis Cluster, behave as one server.

Clients on each instance chat, see each other online and in rooms, and notify each
other; ``/api/online-users`` and ``/api/rooms`` agree on both instances. When an
instance is SIGKILLed, its users leave the other instance's lists within the
documented bound (2 x the presence TTL) and the others are told (``user:left``,
``room:user:left``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from rtkit_process import ServerProcess, rtkit_serve, token_for

from rtkit.realtime import ChatClient
from rtkit_testing import unique_name as unique

pytestmark = [pytest.mark.redis, pytest.mark.slow]


CLUSTER = pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster])


@pytest.fixture
def shared(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """``--redis`` and ``--adapter`` arguments: the shared Redis with the classic manager
    (its default) or the sharded one, or the private cluster (sharded, its default)."""
    if request.param == "cluster":
        return ("--redis", str(request.getfixturevalue("redis_cluster").url))
    url = str(request.getfixturevalue("redis_url"))
    if request.param == "single-sharded":
        return ("--redis", url, "--adapter", "sharded")
    return ("--redis", url)


EVENTS = (
    "user:joined",
    "user:left",
    "room:user:joined",
    "room:user:left",
    "chat:message",
    "typing:start",
    "notification:received",
)


class Person:
    """A ChatClient connected as one user, with every event it received."""

    def __init__(self, user_id: str, client: ChatClient) -> None:
        self.user_id = user_id
        self.client = client
        self.seen: list[tuple[str, Any]] = []
        for event in EVENTS:
            client.on(event, lambda value, event=event: self.seen.append((event, value)))

    def of(self, event: str) -> list[Any]:
        """Every payload (a pydantic model) received for ``event`` so far."""
        return [value for name, value in self.seen if name == event]

    async def wait_for(self, event: str, check: Callable[[Any], bool], timeout: float = 15) -> Any:
        """The first ``event`` payload for which ``check`` is true (polls, generous deadline)."""
        async with asyncio.timeout(timeout):
            while True:
                for value in self.of(event):
                    if check(value):
                        return value
                await asyncio.sleep(0.02)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll ``check`` until it holds (no timing assumptions)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def online(server: ServerProcess) -> dict[str, Any]:
    """``GET /api/online-users`` of ``server``."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get("/api/online-users")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def rooms(server: ServerProcess) -> dict[str, Any]:
    """``GET /api/rooms`` of ``server``."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get("/api/rooms")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def user_ids(listing: dict[str, Any]) -> set[str]:
    """The user ids of an ``/api/online-users`` answer."""
    return {user["userId"] for user in listing["users"]}


@asynccontextmanager
async def two_instances(
    shared: tuple[str, ...], prefix: str, *, presence_ttl: float = 30, recovery: float = 0
) -> AsyncIterator[tuple[ServerProcess, ServerProcess, AsyncExitStack]]:
    """Two server processes on one Redis and prefix; the stack closes clients first."""
    args = (*shared, "--prefix", prefix, "--presence-ttl", str(presence_ttl))
    args += ("--max-disconnection-duration", str(recovery))
    async with (
        rtkit_serve(*args) as first,
        rtkit_serve(*args) as second,
        AsyncExitStack() as clients,
    ):
        yield first, second, clients


async def connect(stack: AsyncExitStack, server: ServerProcess, user_id: str) -> Person:
    """Connect ``user_id`` to ``server``; disconnected when ``stack`` closes."""
    client = ChatClient(reconnection=False)
    person = Person(user_id, client)
    await client.connect(server.url, token_for(user_id, user_id.split("-")[0].title()))
    stack.push_async_callback(client.disconnect)
    return person


@pytest.mark.parametrize("shared", ["single", "single-sharded", CLUSTER], indirect=True)
async def test_clients_on_two_instances_chat_as_on_one(
    shared: tuple[str, ...], redis_prefix: str
) -> None:
    alice_id, bob_id, carol_id = unique("alice"), unique("bob"), unique("carol")
    room = unique("room")
    async with two_instances(shared, redis_prefix) as (a, b, stack):
        alice = await connect(stack, a, alice_id)
        bob = await connect(stack, b, bob_id)

        # Presence is shared: the arrival crosses instances, both lists agree.
        await alice.wait_for("user:joined", lambda u: u.user_id == bob_id)
        assert user_ids(await online(a)) == user_ids(await online(b)) == {alice_id, bob_id}
        assert (await online(a))["count"] == 2

        # Rooms are shared: joining on B sees the member on A, and A is told.
        await alice.client.join_room(room)
        joined = await bob.client.join_room(room)
        assert sorted(joined.users) == sorted([alice_id, bob_id])
        await alice.wait_for("room:user:joined", lambda e: e.user_id == bob_id)
        listed_a, listed_b = await rooms(a), await rooms(b)
        assert listed_a == listed_b
        assert [(r["id"], r["userCount"]) for r in listed_a["rooms"]] == [(room, 2)]

        # Chat and typing cross instances both ways; history is shared.
        from_b = await bob.client.send_message(room, "hello from B")
        got = await alice.wait_for("chat:message", lambda m: m.id == from_b)
        assert (got.user_id, got.message, got.room_id) == (bob_id, "hello from B", room)
        from_a = await alice.client.send_message(room, "hello from A")
        await bob.wait_for("chat:message", lambda m: m.id == from_a)
        await alice.client.start_typing(room)
        await bob.wait_for("typing:start", lambda t: t.user_id == alice_id)
        history = await bob.client.history(room)
        assert [m.id for m in history[-2:]] == [from_b, from_a]

        # A second tab of Alice on B: no second user:joined, and a notification reaches
        # both of her connections, on both instances.
        alice_tab = await connect(stack, b, alice_id)
        await bob.client.send_notification(alice_id, "mention", {"room": room})
        for tab in (alice, alice_tab):
            note = await tab.wait_for("notification:received", lambda n: n.type == "mention")
            assert (note.from_user_id, note.content) == (bob_id, {"room": room})
        assert [u.user_id for u in bob.of("user:joined")].count(alice_id) == 0
        assert [u.user_id for u in alice.of("user:joined")].count(bob_id) == 1

        # A notification to an offline user waits for them, whichever instance they use.
        await bob.client.send_notification(carol_id, "invite", {"room": room})
        carol = await connect(stack, a, carol_id)
        note = await carol.wait_for("notification:received", lambda n: n.type == "invite")
        assert note.from_user_id == bob_id

        # Leaving: Bob's last connection goes, A tells Alice and both lists agree.
        await bob.client.disconnect()
        await alice.wait_for("room:user:left", lambda e: e.user_id == bob_id)
        await alice.wait_for("user:left", lambda u: u.user_id == bob_id)
        expected = {alice_id, carol_id}
        assert user_ids(await online(a)) == user_ids(await online(b)) == expected
        assert (await rooms(a))["rooms"][0]["userCount"] == 1


@pytest.mark.parametrize("shared", ["single", CLUSTER], indirect=True)
async def test_a_killed_instance_users_leave_the_other_instance_lists(
    shared: tuple[str, ...], redis_prefix: str
) -> None:
    ttl = 2.0
    alice_id, bob_id = unique("alice"), unique("bob")
    room = unique("room")
    async with two_instances(shared, redis_prefix, presence_ttl=ttl) as (a, b, stack):
        alice = await connect(stack, a, alice_id)
        bob = await connect(stack, b, bob_id)
        await alice.client.join_room(room)
        await bob.client.join_room(room)
        assert user_ids(await online(a)) == {alice_id, bob_id}

        await b.kill()

        async def bob_is_gone() -> bool:
            listed = await rooms(a)
            counts = [r["userCount"] for r in listed["rooms"] if r["id"] == room]
            return user_ids(await online(a)) == {alice_id} and counts == [1]

        # Documented bound: 2 x ttl after the last heartbeat; generous slack for a busy CI.
        await eventually(bob_is_gone, timeout=2 * ttl + 20)
        # Alice, on the surviving instance, is told as if Bob had disconnected.
        await alice.wait_for("user:left", lambda u: u.user_id == bob_id, timeout=20)
        left = await alice.wait_for("room:user:left", lambda e: e.user_id == bob_id, timeout=20)
        assert left.room_id == room
        assert (await online(a))["count"] == 1

        # The surviving instance carries on.
        message_id = await alice.client.send_message(room, "still here")
        await alice.wait_for("chat:message", lambda m: m.id == message_id)


async def test_a_killed_instance_held_sessions_end_with_it(
    redis_url: str, redis_prefix: str
) -> None:
    """A lost connection's presence is held for the recovery time by its instance; when
    that instance dies, the hold goes with its other connections (2 x ttl), not later."""
    ttl = 2.0
    alice_id, bob_id = unique("alice"), unique("bob")
    room = unique("room")
    async with two_instances(
        ("--redis", redis_url), redis_prefix, presence_ttl=ttl, recovery=600
    ) as (
        a,
        b,
        stack,
    ):
        alice = await connect(stack, a, alice_id)
        bob = await connect(stack, b, bob_id)
        await alice.client.join_room(room)
        await bob.client.join_room(room)
        ws = bob.client.sio.eio.ws
        assert ws is not None
        await ws.close()  # lost, as by the network: B holds Bob for 600 s

        async def bob_is_held() -> bool:
            return not bob.client.connected and user_ids(await online(a)) == {alice_id, bob_id}

        await eventually(bob_is_held, timeout=20)
        await asyncio.sleep(ttl)
        assert user_ids(await online(a)) == {alice_id, bob_id}
        assert [u.user_id for u in alice.of("user:left")] == []

        await b.kill()
        await alice.wait_for("user:left", lambda u: u.user_id == bob_id, timeout=2 * ttl + 20)
        left = await alice.wait_for("room:user:left", lambda e: e.user_id == bob_id, timeout=20)
        assert left.room_id == room
        assert user_ids(await online(a)) == {alice_id}
