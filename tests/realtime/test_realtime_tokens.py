"""Tokens end sessions, downloads use signed links, ids of every allowed length work.

Issue 10, items 11 (expired tokens keep working), 12 (tokens in logs) and 15 (one
length rule end to end), over real sockets and HTTP, on memory and Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from realtime_support import SECRET, Chat, Recorder, eventually, make_server, serving, token_for

from rtkit import ManualClock
from rtkit.errors import NotMember, PayloadTooLarge, TokenExpired
from rtkit.realtime import ChatClient, issue_token
from rtkit_testing import Backend

# ------------------------------------------------------------------ item 11: expiry


async def disconnected(client: ChatClient) -> None:
    async def gone() -> bool:
        return not client.connected

    await eventually(gone)


async def test_a_connection_ends_when_its_token_expires(chat: Chat) -> None:
    client = ChatClient(reconnection=False)
    seen = Recorder(client)
    await client.connect(chat.url, token_for("ada", ttl=2))
    await client.join_room("lobby")
    error = await seen.wait_for("error", lambda e: e.code == "token_expired", timeout=10)
    assert "expired" in error.message
    await disconnected(client)
    async with httpx.AsyncClient(base_url=chat.url) as http:

        async def nobody_online() -> bool:
            return (await http.get("/health")).json()["users"] == 0

        await eventually(nobody_online)
    await client.close()


async def test_an_event_after_expiry_is_refused_and_ends_the_session() -> None:
    clock = ManualClock(start=time.time())
    server = make_server("memory://", "rtkit:", clock=clock)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada, bob = await chat.connect("ada"), await chat.connect("bob")
        await ada.client.join_room("lobby")
        await bob.client.join_room("lobby")
        clock.advance(601)  # the tests' tokens live 600 s

        with pytest.raises(TokenExpired):
            await ada.client.send_message("lobby", "too late")
        error = await ada.seen.wait_for("error", lambda e: e.code == "token_expired")
        assert error.event is None
        await disconnected(ada.client)

        await bob.client.sio.emit("typing:start", {"roomId": "lobby"})  # without an ack
        error = await bob.seen.wait_for("error", lambda e: e.code == "token_expired")
        assert error.event == "typing:start"
        await disconnected(bob.client)

        carol = ChatClient(reconnection=False)  # a fresh token is welcome
        await carol.connect(url, token_for("carol", ttl=3600))
        await carol.join_room("lobby")
        assert await carol.history("lobby") == []
        await carol.close()
        await chat.close()


async def test_idle_connections_are_ended_too() -> None:
    clock = ManualClock(start=time.time())
    server = make_server("memory://", "rtkit:", clock=clock)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        later = ChatClient(reconnection=False)
        await later.connect(url, token_for("bob", ttl=3600))
        assert await server.expire_sessions() == 0
        clock.advance(601)
        assert await server.expire_sessions() == 1
        await ada.seen.wait_for("error", lambda e: e.code == "token_expired")
        await disconnected(ada.client)
        assert later.connected
        await later.close()
        await chat.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_token_provider_reconnects_with_a_fresh_token(memory_chat: Chat, kind: str) -> None:
    issued: list[str] = []

    def fresh() -> str:
        issued.append(token_for("ada", "Ada", ttl=2))
        return issued[-1]

    async def fresh_async() -> str:
        await asyncio.sleep(0)
        return fresh()

    provider: Callable[[], Any] = fresh if kind == "sync" else fresh_async
    bob = await memory_chat.connect("bob")
    await bob.client.join_room("lobby")
    client = ChatClient(reconnection=False)
    seen = Recorder(client)
    await client.connect(memory_chat.url, provider)
    await client.join_room("lobby")
    await seen.wait_for("error", lambda e: e.code == "token_expired", timeout=10)

    async def back_in_the_room() -> bool:
        return len(issued) >= 2 and client.connected and len(seen.of("room:joined")) >= 2

    await eventually(back_in_the_room)
    await bob.client.send_message("lobby", "welcome back")
    got = await seen.wait_for("chat:message", lambda m: m.message == "welcome back")
    assert got.user_id == "bob"
    await client.close()


# ------------------------------------------------------------------ item 12: links


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def assert_no_token(url: str, *tokens: str) -> None:
    """No session token, and no ``token`` parameter, in ``url``."""
    assert "token" not in query_of(url)
    for token in tokens:
        assert token not in url
        assert token.split(".")[2] not in url  # not even the JWT's signature part


async def test_downloads_use_links_signed_per_file_and_user(
    backend: Backend, tmp_path: Path
) -> None:
    server = make_server(backend.url, backend.prefix, upload_dir=tmp_path)
    async with serving(server) as url, httpx.AsyncClient(base_url=url) as http:
        chat = Chat(url, server)
        ada, bob = await chat.connect("ada"), await chat.connect("bob")
        await ada.client.join_room("files")
        await bob.client.join_room("files")
        own = await ada.client.upload("files", "notes.txt", b"the notes")
        complete = await bob.seen.wait_for("file:upload:complete")
        mine = await ada.seen.wait_for("file:upload:complete")
        assert mine.url != complete.url  # each member gets a link of their own
        for link in (own, complete.url, mine.url):
            assert_no_token(link, token_for("ada"), token_for("bob"))
            assert link.startswith(f"/api/uploads/{complete.upload_id}?")
        assert query_of(complete.url)["user"] == ["bob"]

        response = await http.get(complete.url)  # no header, no token: the link is enough
        assert response.status_code == 200 and response.content == b"the notes"
        assert response.headers["cache-control"] == "private, no-store"

        fresh = await bob.client.sio.call("file:download", {"uploadId": complete.upload_id})
        assert fresh["ok"] and fresh["url"] != "" and fresh["expiresAt"].endswith("Z")
        assert_no_token(fresh["url"], token_for("bob"))
        assert await bob.client.download(complete.upload_id) == b"the notes"
        assert await bob.client.download(fresh["url"]) == b"the notes"

        # Tampering with any part of a link breaks it.
        parts = query_of(complete.url)
        path = urlsplit(complete.url).path
        for change in ({"user": "eve"}, {"expires": str(int(time.time()) + 10**6)}):
            forged = {**{k: v[0] for k, v in parts.items()}, **change}
            refused = await http.get(path, params=forged)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
        other = await ada.client.upload("files", "other.txt", b"other")
        elsewhere = urlsplit(other).path
        reused = await http.get(elsewhere, params={k: v[0] for k, v in parts.items()})
        assert reused.status_code == 401  # a link is for one file only

        # A session token in a URL is refused outright (it would land in access logs).
        by_query = await http.get(path, params={"token": token_for("bob")})
        assert by_query.status_code == 401
        assert "not accepted in URLs" in by_query.json()["error"]["message"]

        # A link stops working when its user leaves the room.
        await bob.client.leave_room("files")
        assert (await http.get(complete.url)).status_code == 403
        with pytest.raises(NotMember):
            await bob.client.download_url(complete.upload_id)
        await chat.close()


async def test_a_link_expires() -> None:
    clock = ManualClock(start=time.time())
    server = make_server("memory://", "rtkit:", clock=clock)
    async with serving(server) as url, httpx.AsyncClient(base_url=url) as http:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("files")
        link = await ada.client.upload("files", "a.txt", b"a")
        assert (await http.get(link)).status_code == 200
        clock.advance(server.chat.limits.download_link_ttl + 1)
        expired = await http.get(link)
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "token_expired"
        await chat.close()


@pytest.mark.redis
async def test_a_link_made_on_one_instance_works_on_another(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    one = make_server(redis_url, redis_prefix, upload_dir=tmp_path)
    two = make_server(redis_url, redis_prefix, upload_dir=tmp_path)
    async with serving(one) as url_one, serving(two) as url_two:
        chat = Chat(url_one, one)
        ada = await chat.connect("ada")
        await ada.client.join_room("files")
        link = await ada.client.upload("files", "a.txt", b"shared")
        async with httpx.AsyncClient(base_url=url_two) as http:
            assert (await http.get(link)).content == b"shared"
        await chat.close()


# ------------------------------------------------------------------ item 15: long ids

LONGEST = "é" * 128  # 256 UTF-8 bytes: the longest id the verifier accepts


async def test_a_user_id_of_the_longest_length_can_do_everything(
    backend: Backend, tmp_path: Path
) -> None:
    server = make_server(backend.url, backend.prefix, upload_dir=tmp_path)
    async with serving(server) as url, httpx.AsyncClient(base_url=url) as http:
        chat = Chat(url, server)
        token = issue_token(SECRET, LONGEST)  # no name: named by the id
        client = ChatClient(reconnection=False)
        seen = Recorder(client)
        await client.connect(url, token)
        online = await seen.wait_for("users:online")
        assert [(u.user_id, u.username) for u in online] == [(LONGEST, LONGEST)]
        friend = await chat.connect("friend")
        await friend.client.join_room("lobby")

        joined = await client.join_room("lobby")
        assert LONGEST in joined.users
        message_id = await client.send_message("lobby", "hello")
        assert [m.id for m in await client.history("lobby")] == [message_id]
        await client.start_typing("lobby")
        await client.stop_typing("lobby")
        await client.game_move("lobby", {"x": 1})
        assert (await friend.seen.wait_for("game:move")).user_id == LONGEST
        await client.send_notification(LONGEST, "self", "to me")
        await client.send_notification("friend", "wave", "hi")
        assert (await friend.seen.wait_for("notification:received")).from_user_id == LONGEST
        await friend.client.send_notification(LONGEST, "wave", "back")
        note = await seen.wait_for("notification:received", lambda n: n.content == "back")
        assert note.to_user_id == LONGEST
        link = await client.upload("lobby", "long.txt", b"long ids work")
        assert (await http.get(link)).content == b"long ids work"
        assert await client.download(await client.download_url(link.split("?")[0][-36:])) == (
            b"long ids work"
        )
        users = (await http.get("/api/online-users")).json()["users"]
        assert LONGEST in [u["userId"] for u in users]
        await client.leave_room("lobby")
        await client.close()
        gone = await friend.seen.wait_for("user:left")
        assert gone.user_id == LONGEST

        # One byte more is refused everywhere, the same way.
        with pytest.raises(PayloadTooLarge):
            issue_token(SECRET, LONGEST + "x")
        await chat.close()
