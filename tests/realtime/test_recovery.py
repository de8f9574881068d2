"""Connection state recovery: the stores (memory is the specification), ChatClient, the chat.

The official Node client's tests are in ``test_recovery_node.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio
from realtime_support import SECRET, Chat, eventually, make_server, serving, token_for

from rtkit import ManualClock
from rtkit.errors import ConfigurationError
from rtkit.realtime import ChatClient, ChatMessage, RealtimeServer
from rtkit.realtime._recovery import (
    MemoryRecoveryStore,
    RecoveryStore,
    RedisRecoveryStore,
    Session,
    is_recoverable,
    parse_resume,
)
from rtkit_testing import Backend
from rtkit_testing import unique_name as unique
from rtkit_topology import PrivateSentinel

# ---------------------------------------------------------------- the stores


@pytest.fixture
async def store_and_clock(
    backend: Backend, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[RecoveryStore, ManualClock]]:
    clock = ManualClock(1_000.0)
    if backend.kind == "memory":
        yield MemoryRecoveryStore(duration=10, max_packets=5, clock=clock), clock
        return
    client = aioredis.Redis.from_url(backend.url, decode_responses=True)
    store = RedisRecoveryStore(
        client, prefix=backend.prefix, duration=10, max_packets=5, clock=clock
    )
    try:
        yield store, clock
    finally:
        await store.close()
        await client.aclose()


async def _add(store: RecoveryStore, room: str, text: str) -> str:
    message = {"event": "msg", "data": [text], "room": room, "skip_sid": None}
    if isinstance(store, MemoryRecoveryStore):
        return store.append("/", message)
    assert isinstance(store, RedisRecoveryStore)
    head, tail = json.dumps({**message, "data": [text, "MARK"]}).split('"MARK"')
    await store.publish("/", "rtkit-test-unheard-" + unique("channel"), [(head, tail)])
    return await store.head("/")


def _session(pid: str, *, origin: str, expires_at: float) -> Session:
    return Session(
        pid=pid,
        sid="sid1",
        namespace="/",
        rooms=["sid1", "a"],
        origin=origin,
        sent=None,
        seen=origin,
        data={"user": "u1"},
        expires_at=expires_at,
    )


async def test_missed_packets_come_in_order_after_the_offset(
    store_and_clock: tuple[RecoveryStore, ManualClock],
) -> None:
    store, _ = store_and_clock
    start = await store.head("/")
    offsets = [await _add(store, "a", str(i)) for i in range(4)]
    assert await store.head("/") == offsets[-1]
    missed = await store.missed("/", offsets[1])
    assert missed is not None
    assert [m.offset for m in missed] == offsets[2:]
    assert [m.message["data"] for m in missed] == [["2", offsets[2]], ["3", offsets[3]]]
    assert [m.message["room"] for m in missed] == ["a", "a"]
    everything = await store.missed("/", start)
    assert everything is not None and len(everything) == 4
    assert await store.missed("/", offsets[-1]) == []


async def test_no_recovery_once_a_missed_packet_was_trimmed(
    store_and_clock: tuple[RecoveryStore, ManualClock],
) -> None:
    store, _ = store_and_clock
    first = await _add(store, "a", "first")
    for i in range(300):  # far beyond max_packets (Redis trims approximately)
        await _add(store, "a", str(i))
    assert await store.missed("/", first) is None
    newest = await store.head("/")
    assert await store.missed("/", newest) == []


async def test_an_offset_from_elsewhere_recovers_nothing(
    store_and_clock: tuple[RecoveryStore, ManualClock],
) -> None:
    store, _ = store_and_clock
    await _add(store, "a", "x")
    assert await store.missed("/", "99999999999999-0") is None


async def test_a_session_is_taken_once_and_expires(
    store_and_clock: tuple[RecoveryStore, ManualClock],
) -> None:
    store, clock = store_and_clock
    pid, other = unique("pid-aaaaaaaa"), unique("pid-bbbbbbbb")
    await store.save(_session(pid, origin="0", expires_at=clock.time() + 10))
    await store.save(_session(other, origin="0", expires_at=clock.time() + 10))
    taken = await store.take(pid)
    assert taken is not None and taken.data == {"user": "u1"}
    assert await store.take(pid) is None
    clock.advance(10.5)
    assert await store.take(other) is None


def test_what_a_session_missed() -> None:
    session = Session(
        pid="p" * 12,
        sid="s1",
        namespace="/",
        rooms=["s1", "room:a"],
        origin="5",
        sent="9",
        seen="20",
        data={},
        expires_at=0,
    )
    assert session.base("9") == "20"  # saw all it was sent: only what came later
    assert session.base("7") == "7"  # lost some in flight
    assert session.base(None) == "5"  # saw nothing of what it was sent
    assert session.base("2") == "5"  # never before its own start
    assert session.wants("room:a", None) and session.wants(None, None)
    assert session.wants(["x", "s1"], None)
    assert not session.wants("room:b", None)
    assert not session.wants("room:a", "s1") and not session.wants(None, ["x", "s1"])


def test_what_a_client_may_ask() -> None:
    assert parse_resume({"token": "t"}) is None
    assert parse_resume({"pid": "abcdefgh12"}) == ("abcdefgh12", None)
    assert parse_resume({"pid": "abcdefgh12", "offset": "12-3"}) == ("abcdefgh12", "12-3")
    for bad in ({"pid": "short"}, {"pid": "x" * 100}, {"pid": "abc def gh"}, {"pid": 3}):
        assert parse_resume(bad) is None
    assert parse_resume({"pid": "abcdefgh12", "offset": "1; DROP"}) is None
    assert parse_resume({"pid": "abcdefgh12", "offset": 12}) is None
    assert is_recoverable("transport close") and is_recoverable("ping timeout")
    assert not is_recoverable("client disconnect") and not is_recoverable("server disconnect")


# ---------------------------------------------------------------- configuration


def test_recovery_is_off_by_default_and_checked() -> None:
    assert RealtimeServer(secret=SECRET).recovery is None
    assert RealtimeServer(secret=SECRET, max_disconnection_duration=30).recovery is not None
    with pytest.raises(ConfigurationError):
        RealtimeServer(secret=SECRET, max_disconnection_duration=-1)
    with pytest.raises(ConfigurationError):
        RealtimeServer(secret=SECRET, max_disconnection_duration=float("nan"))
    with pytest.raises(ConfigurationError):
        RealtimeServer(secret=SECRET, max_disconnection_duration=30, max_recovery_packets=0)
    with pytest.raises(ConfigurationError, match="recovering client_manager"):
        RealtimeServer(
            secret=SECRET, max_disconnection_duration=30, client_manager=socketio.AsyncManager()
        )


@pytest.mark.redis
@pytest.mark.parametrize("adapter", ["sharded", "node-redis"])
def test_recovery_is_refused_with_an_adapter_that_cannot_keep_it(
    redis_url: str, adapter: str
) -> None:
    """Recovery rides on the classic channel's one stream: the others say so at once."""
    with pytest.raises(ConfigurationError, match="not yet with adapter"):
        RealtimeServer.from_url(
            redis_url, secret=SECRET, adapter=adapter, max_disconnection_duration=30
        )


# ---------------------------------------------------------------- the chat


async def _cut(client: ChatClient) -> None:
    """Lose the connection as a network would (the client reconnects by itself)."""
    ws = client.sio.eio.ws
    assert ws is not None
    await ws.close()


@pytest.fixture
async def recovering(backend: Backend) -> AsyncIterator[Chat]:
    server = make_server(backend.url, backend.prefix, max_disconnection_duration=2)
    async with serving(server) as url:
        chat = Chat(url, server)
        try:
            yield chat
        finally:
            await chat.close()


async def test_chat_client_recovers_without_flicker(recovering: Chat) -> None:
    await _recovers_without_flicker(recovering)


@pytest.mark.redis
@pytest.mark.sentinel
async def test_recovery_runs_through_sentinel(redis_sentinel: PrivateSentinel) -> None:
    server = make_server(redis_sentinel.url, unique("recovery") + ":", max_disconnection_duration=2)
    async with serving(server) as url:
        chat = Chat(url, server)
        try:
            await _recovers_without_flicker(chat)
        finally:
            await chat.close()


async def _recovers_without_flicker(recovering: Chat) -> None:
    """Alice drops out for 0.2 s: she misses nothing, sees nothing twice, and nobody
    sees her leave."""
    room = unique("room")
    # Bob first, and he sees Alice come online: with recovery on Redis her user:joined
    # goes through the channel, so one Bob connected after her could still get it late
    bob = await recovering.connect(unique("bob"), "Bob")
    alice = await recovering.connect(unique("alice"), "Alice")
    await bob.seen.wait_for("user:joined", lambda e: e.user_id == alice.user_id)
    await alice.client.join_room(room)
    await bob.client.join_room(room)
    sid = alice.client.sid
    for i in range(10):
        await bob.client.send_message(room, f"before {i}")
    await alice.seen.wait_for("chat:message", lambda m: m.message == "before 9")
    lost = asyncio.Event()
    alice.client.on_disconnect(lambda reason: lost.set())
    await _cut(alice.client)
    await lost.wait()  # (it comes back 0.2 s later)
    for i in range(10):
        await bob.client.send_message(room, f"during {i}")
    # during the gap, Alice is still online and in the room for everybody
    assert await recovering.server.presence.is_online(alice.user_id)
    assert alice.user_id in (await recovering.server.rooms.members(room)).items
    await eventually(lambda: _async(alice.client.connected))
    for i in range(10):
        await bob.client.send_message(room, f"after {i}")
    await alice.seen.wait_for("chat:message", lambda m: m.message == "after 9")
    await asyncio.sleep(0.2)  # a duplicate would arrive now
    texts = [m.message for m in alice.seen.of("chat:message")]
    expected = [f"{when} {i}" for when in ("before", "during", "after") for i in range(10)]
    assert texts == expected
    assert alice.client.recovered and alice.client.sid == sid
    assert recovering.server.recovered(sid)
    assert len(alice.seen.of("room:joined")) == 1  # no rejoin: the server kept the room
    left = bob.seen.of("user:left") + bob.seen.of("room:user:left")
    assert [e for e in left if e.user_id == alice.user_id] == []
    joined = [e for e in bob.seen.of("user:joined") if e.user_id == alice.user_id]
    assert len(joined) == 1  # her first connect's only: none for the recovery


@pytest.mark.slow
async def test_a_session_that_does_not_return_ends_after_the_duration(recovering: Chat) -> None:
    room = unique("room")
    alice = await recovering.connect(unique("alice"), "Alice")
    bob = await recovering.connect(unique("bob"), "Bob")
    await alice.client.join_room(room)
    await bob.client.join_room(room)
    await alice.client.disconnect()
    # A deliberate disconnect is not recoverable: Alice leaves at once.
    await bob.seen.wait_for("user:left", lambda e: e.user_id == alice.user_id)

    carol = await recovering.connect(unique("carol"), "Carol")
    await carol.client.join_room(room)
    carol.client.sio.reconnection = False
    await _cut(carol.client)
    await asyncio.sleep(0.5)
    assert await recovering.server.presence.is_online(carol.user_id)  # held
    assert bob.seen.of("room:user:left")[-1].user_id == alice.user_id
    event = await bob.seen.wait_for("user:left", lambda e: e.user_id == carol.user_id)
    assert event.user_id == carol.user_id
    left = await bob.seen.wait_for("room:user:left", lambda e: e.user_id == carol.user_id)
    assert left.room_id == room
    assert not await recovering.server.presence.is_online(carol.user_id)


async def test_events_carry_offsets_only_with_recovery(memory_chat: Chat) -> None:
    raw = socketio.AsyncClient()
    seen: list[tuple[Any, ...]] = []
    raw.on("users:online", lambda *args: seen.append(args))
    await raw.connect(
        memory_chat.url, auth={"token": token_for("u-plain")}, transports=["websocket"]
    )
    try:
        await eventually(lambda: _async(bool(seen)))
        assert len(seen[0]) == 1  # no offset argument
    finally:
        await raw.disconnect()


async def test_an_emit_that_skips_the_queue_is_neither_numbered_nor_kept(
    recovering: Chat,
) -> None:
    """(What must reach a connection before the server ends it.) Memory and Redis alike."""
    raw = socketio.AsyncClient()
    seen: list[tuple[Any, ...]] = []
    raw.on("notice", lambda *args: seen.append(args))
    await raw.connect(recovering.url, auth={"token": token_for("u-q")}, transports=["websocket"])
    try:
        store = recovering.server.recovery
        assert store is not None
        head = await store.head("/")
        await recovering.server.sio.emit("notice", {"n": 1}, to=raw.get_sid(), ignore_queue=True)
        await eventually(lambda: _async(bool(seen)))
        assert seen == [({"n": 1},)]  # no offset argument
        kept = await store.missed("/", head)  # (the connect's own broadcasts may be there)
        assert kept is not None
        assert "notice" not in [m.message.get("event") for m in kept]  # nothing to replay
    finally:
        await raw.disconnect()


async def _async(value: bool) -> bool:
    return value


async def test_chat_message_payload_is_unchanged_with_recovery(recovering: Chat) -> None:
    room = unique("room")
    alice = await recovering.connect(unique("alice"))
    await alice.client.join_room(room)
    await alice.client.send_message(room, "hi")
    message = await alice.seen.wait_for("chat:message")
    assert isinstance(message, ChatMessage) and message.message == "hi"
    assert alice.client.sio.offset is not None


async def test_a_session_is_not_for_another_user(recovering: Chat) -> None:
    alice = await recovering.connect(unique("alice"), "Alice")
    pid = alice.client.sio.pid
    assert pid is not None
    alice.client.sio.reconnection = False
    await _cut(alice.client)
    mallory = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    mallory.on("connect_error", lambda data: refused.append(data))
    auth = {"token": token_for(unique("mallory")), "pid": pid, "offset": alice.client.sio.offset}
    # (the session is kept once Alice's departure is recorded: until then, a new one)
    for _ in range(50):
        try:
            await mallory.connect(recovering.url, auth=auth, transports=["websocket"])
            await mallory.disconnect()
        except socketio.exceptions.ConnectionError:
            break
        await asyncio.sleep(0.05)
    assert "another user" in str(refused[-1])
    assert not mallory.connected


async def test_a_client_that_missed_too_much_starts_anew(backend: Backend) -> None:
    server = make_server(
        backend.url, backend.prefix, max_disconnection_duration=30, max_recovery_packets=5
    )
    async with serving(server) as url:
        chat = Chat(url, server)
        try:
            room = unique("room")
            bob = await chat.connect(unique("bob"), "Bob")
            alice_client = ChatClient(reconnection_delay=2.0, randomization_factor=0)
            await alice_client.connect(url, token_for(unique("alice"), "Alice"))
            rejoined = asyncio.Event()
            alice_client.on_room_joined(lambda joined: rejoined.set())
            await alice_client.join_room(room)
            await bob.client.join_room(room)
            sid = alice_client.sid
            lost = asyncio.Event()
            alice_client.on_disconnect(lambda reason: lost.set())
            await _cut(alice_client)
            await lost.wait()
            rejoined.clear()
            for i in range(3):
                await bob.client.send_message(room, f"gap {i}")
            for i in range(300):  # far more than the stream keeps (Redis trims by 100)
                await server.sio.emit("noise", {"i": i}, to="room:elsewhere")
            await rejoined.wait()  # not recovered: the client joins its rooms again
            assert not alice_client.recovered and alice_client.sid != sid
            await alice_client.close()
        finally:
            await chat.close()


# ---------------------------------------------------------------- the Redis store's connection


@pytest.mark.redis
async def test_packets_kept_together_keep_their_order(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisRecoveryStore(client, prefix=redis_prefix, duration=10)
    channel = "rtkit-test-" + unique("channel")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        parts = []
        for text in ("a", "b", "c"):
            message = {"event": "msg", "data": [text, "MARK"], "room": None, "skip_sid": None}
            head, tail = json.dumps(message).split('"MARK"')
            parts.append((head, tail))
        await store.publish("/", channel, parts)
        heard: list[Any] = []
        async with asyncio.timeout(5):
            while len(heard) < 3:  # (None: nothing yet, or the subscribe confirmation)
                got = await pubsub.get_message(timeout=1)
                if got is not None:
                    heard.append(json.loads(got["data"]))
        assert [m["data"][0] for m in heard] == ["a", "b", "c"]
        missed = await store.missed("/", "0-0")
        assert missed is not None
        assert [m.offset for m in missed] == [m["data"][1] for m in heard]  # stream order
        assert [m.message["data"] for m in missed] == [m["data"] for m in heard]
    finally:
        await pubsub.aclose()
        await store.close()
        await client.aclose()


@pytest.mark.redis
async def test_the_store_reconnects_when_redis_dropped_its_connection(
    redis_url: str, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    name = "rtkit-test-" + unique("store")
    client = aioredis.Redis.from_url(redis_url, client_name=name, decode_responses=True)
    store = RedisRecoveryStore(client, prefix=redis_prefix, duration=10)
    channel = "rtkit-test-" + unique("channel")
    head, tail = json.dumps({"event": "msg", "data": ["x", "MARK"]}).split('"MARK"')
    try:
        await store.publish("/", channel, [(head, tail)])
        killed = 0
        for info in await redis_client.client_list():
            if info.get("name") == name:
                await redis_client.execute_command("CLIENT", "KILL", "ID", info["id"])
                killed += 1
        assert killed == 1  # the store's own connection
        await asyncio.sleep(0.1)  # the close reaches the store while it is idle
        await store.publish("/", channel, [(head, tail)])  # on a new connection, not an error
        missed = await store.missed("/", "0-0")
        assert missed is not None and len(missed) == 2
    finally:
        await store.close()
        await client.aclose()
    assert not [i for i in await redis_client.client_list() if i.get("name") == name]


@pytest.mark.redis
async def test_a_closed_server_leaves_no_recovery_connection(
    redis_url: str, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    name = "rtkit-test-" + unique("server")
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}client_name={name}"
    server = make_server(url, redis_prefix, max_disconnection_duration=2)
    async with serving(server) as address:
        chat = Chat(address, server)
        try:
            alice = await chat.connect(unique("alice"), "Alice")
            room = unique("room")
            await alice.client.join_room(room)
            await alice.client.send_message(room, "kept for recovery")
            await alice.seen.wait_for("chat:message", lambda m: m.message == "kept for recovery")
        finally:
            await chat.close()
    await server.close()
    assert not [i for i in await redis_client.client_list() if i.get("name") == name]
