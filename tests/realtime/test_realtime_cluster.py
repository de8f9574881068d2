"""Two RealtimeServer instances on one Redis behave as one server.

Both instances run in this test process, each on its own port, sharing a key
prefix; clients connect to one or the other. (The two-process SIGKILL test is in
``test_multi_instance.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from realtime_support import Chat, eventually, make_server, serving, token_for

from rtkit import ManualClock

pytestmark = pytest.mark.redis


@dataclass
class Cluster:
    a: Chat
    b: Chat


@pytest.fixture
async def cluster(redis_url: str, redis_prefix: str) -> AsyncIterator[Cluster]:
    """Two instances sharing ``redis_prefix``, both listening for each other's emits."""
    async with AsyncExitStack() as stack:
        chats = []
        for _ in range(2):
            server = make_server(redis_url, redis_prefix)
            url = await stack.enter_async_context(serving(server))
            chats.append(Chat(url, server))
            stack.push_async_callback(chats[-1].close)
        probe = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(probe.aclose)

        async def both_listening() -> bool:
            channel = chats[0].server.sio.manager.channel  # <prefix>socketio:db<N>
            [(_, listeners)] = await probe.pubsub_numsub(channel)
            return int(listeners) >= 2

        await eventually(both_listening)
        yield Cluster(*chats)


async def test_a_message_sent_on_one_instance_reaches_the_other(cluster: Cluster) -> None:
    ada = await cluster.a.connect("ada", "Ada")
    bob = await cluster.b.connect("bob", "Bob")
    await ada.client.join_room("lobby")
    joined = await bob.client.join_room("lobby")
    assert joined.users == ["ada", "bob"]  # room:joined lists members of both instances
    seen = await ada.seen.wait_for("room:user:joined")
    assert seen.user_id == "bob"

    message_id = await ada.client.send_message("lobby", "across instances")
    got = await bob.seen.wait_for("chat:message")
    assert (got.id, got.message) == (message_id, "across instances")
    assert [m.id for m in await bob.client.history("lobby")] == [message_id]

    await bob.client.start_typing("lobby")
    assert (await ada.seen.wait_for("typing:start")).user_id == "bob"
    await bob.client.game_move("lobby", [1, 2])
    assert (await ada.seen.wait_for("game:move")).move == [1, 2]

    await bob.client.leave_room("lobby")
    assert (await ada.seen.wait_for("room:user:left")).user_id == "bob"


async def test_presence_and_rooms_agree_on_every_instance(cluster: Cluster) -> None:
    ada = await cluster.a.connect("ada", "Ada")
    bob = await cluster.b.connect("bob", "Bob")
    assert (await ada.seen.wait_for("user:joined")).user_id == "bob"
    online = await bob.seen.wait_for("users:online")
    assert sorted(u.user_id for u in online) == ["ada", "bob"]
    await ada.client.join_room("a-room")
    await bob.client.join_room("a-room")
    await bob.client.join_room("b-room")

    async with httpx.AsyncClient() as http:
        answers = []
        for chat in (cluster.a, cluster.b):
            users = (await http.get(chat.url + "/api/online-users")).json()
            rooms = (await http.get(chat.url + "/api/rooms")).json()
            answers.append(
                (
                    users["count"],
                    sorted(u["userId"] for u in users["users"]),
                    rooms["count"],
                    sorted((r["id"], r["userCount"]) for r in rooms["rooms"]),
                )
            )
        assert answers[0] == answers[1] == (2, ["ada", "bob"], 2, [("a-room", 2), ("b-room", 1)])

        await bob.client.disconnect()
        assert (await ada.seen.wait_for("user:left")).user_id == "bob"
        assert (await ada.seen.wait_for("room:user:left")).room_id == "a-room"
        for chat in (cluster.a, cluster.b):
            users = (await http.get(chat.url + "/api/online-users")).json()
            assert [u["userId"] for u in users["users"]] == ["ada"]


async def test_notifications_reach_every_connection_on_any_instance(cluster: Cluster) -> None:
    ada = await cluster.a.connect("ada")
    bob_on_a = await cluster.a.connect("bob")
    bob_on_b = await cluster.b.connect("bob")
    note_id = await ada.client.send_notification("bob", "ping", {"n": 1})
    for bob in (bob_on_a, bob_on_b):
        assert (await bob.seen.wait_for("notification:received")).id == note_id

    # Offline on both: kept in Redis, delivered on the next connection, wherever it is.
    later = await ada.client.send_notification("carol", "ping", None)
    carol = await cluster.b.connect("carol")
    assert (await carol.seen.wait_for("notification:received")).id == later


async def test_second_connection_on_another_instance_is_not_a_new_user(cluster: Cluster) -> None:
    watcher = await cluster.a.connect("watcher")
    first = await cluster.a.connect("dora")
    await watcher.seen.wait_for("user:joined", lambda e: e.user_id == "dora")
    second = await cluster.b.connect("dora")
    await second.seen.wait_for("users:online")
    await first.client.disconnect()
    await second.client.join_room("sync")  # the departure of the first tab has been handled
    await watcher.client.join_room("sync")
    assert [e.user_id for e in watcher.seen.of("user:joined")] == ["dora"]
    assert watcher.seen.of("user:left") == []
    await second.client.disconnect()
    await watcher.seen.wait_for("user:left", lambda e: e.user_id == "dora")


async def test_users_of_a_crashed_instance_are_announced_gone(
    redis_url: str, redis_prefix: str
) -> None:
    # A long lease and a manual clock: instance A "crashes" by not renewing its
    # lease while the clock jumps; B's next purge pass finds A expired.
    clock = ManualClock()
    async with AsyncExitStack() as stack:
        chats = []
        for _ in range(2):
            server = make_server(redis_url, redis_prefix, clock=clock, presence_ttl=600)
            chats.append(Chat(await stack.enter_async_context(serving(server)), server))
            stack.push_async_callback(chats[-1].close)
        a, b = chats
        watcher = await b.connect("watcher")
        dora = await a.connect("dora", "Dora")
        await watcher.seen.wait_for("user:joined", lambda e: e.user_id == "dora")
        await dora.client.join_room("lobby")

        await watcher.client.join_room("lobby")

        clock.advance(10_000)
        await b.server.purge_expired()
        gone = await watcher.seen.wait_for("user:left")
        assert (gone.user_id, gone.username) == ("dora", "Dora")
        left = await watcher.seen.wait_for("room:user:left")
        assert (left.user_id, left.room_id) == ("dora", "lobby")
        async with httpx.AsyncClient(base_url=b.url) as http:
            users = (await http.get("/api/online-users")).json()
            assert [u["userId"] for u in users["users"]] == ["watcher"]
            rooms = (await http.get("/api/rooms")).json()["rooms"]
            assert [(r["id"], r["userCount"]) for r in rooms] == [("lobby", 1)]


async def test_uploads_work_across_instances_with_a_shared_folder(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:

        async def instance(folder: Path) -> Chat:
            server = make_server(redis_url, redis_prefix, upload_dir=str(folder))
            chat = Chat(await stack.enter_async_context(serving(server)), server)
            stack.push_async_callback(chat.close)
            return chat

        a = await instance(tmp_path / "shared")
        b = await instance(tmp_path / "shared")
        lonely = await instance(tmp_path / "other")
        ada = await a.connect("ada")
        bob = await b.connect("bob")
        await ada.client.join_room("files")
        await bob.client.join_room("files")

        upload_id = await ada.client.start_upload("files", "a.txt", 5)
        async with httpx.AsyncClient() as http:
            put = await http.put(
                f"{b.url}/api/uploads/{upload_id}",  # sent to the other instance
                content=b"hello",
                headers={"Authorization": f"Bearer {token_for('ada')}"},
            )
            assert put.status_code == 201
            done = await ada.seen.wait_for("file:upload:complete")
            assert done.upload_id == upload_id
            bob_auth = {"Authorization": f"Bearer {token_for('bob')}"}
            got = await http.get(a.url + done.url, headers=bob_auth)
            assert got.content == b"hello"
            # An instance without the shared folder says so cleanly.
            missing = await http.get(lonely.url + done.url, headers=bob_auth)
            assert missing.status_code == 404
