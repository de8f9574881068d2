"""RealtimeServer end to end, over real sockets: every event of the seed and who receives it.

Each test runs on the memory backends and on Redis (the ``chat`` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import socketio
from realtime_support import Chat, User, eventually, make_server, serving, token_for

from rtkit import PresenceStore, RoomManager
from rtkit.errors import (
    AuthError,
    NotMember,
    PayloadTooLarge,
    RateLimited,
    TokenExpired,
    ValidationError,
)
from rtkit.realtime import ChatClient, ChatLimits, Identity, RealtimeServer, issue_token


async def barrier(*users: User) -> None:
    """Make sure every event sent to ``users`` before now has arrived.

    Each user round-trips a ``room:join`` of its own private room; the server
    handles one connection's events in order, so everything emitted to a user
    before its ack has been written before the ack.
    """
    for user in users:
        await user.client.join_room("barrier-" + user.user_id)


async def test_connect_tells_the_others_once_per_user(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    online = await ada.seen.wait_for("users:online")
    assert [(u.user_id, u.username) for u in online] == [("ada", "Ada")]

    bob = await chat.connect("bob", "Bob")
    joined = await ada.seen.wait_for("user:joined")
    assert (joined.user_id, joined.username) == ("bob", "Bob")
    assert joined.time.endswith("Z")
    online = await bob.seen.wait_for("users:online")
    assert sorted(u.user_id for u in online) == ["ada", "bob"]
    assert bob.seen.of("user:joined") == []  # not told about itself

    bob_tab = await chat.connect("bob", "Bob")  # a second tab is not a new user
    await bob_tab.seen.wait_for("users:online")
    await bob_tab.client.disconnect()  # nor is closing one of two tabs a departure
    await barrier(ada)
    assert [u.user_id for u in ada.seen.of("user:joined")] == ["bob"]
    assert ada.seen.of("user:left") == []

    await bob.client.disconnect()
    left = await ada.seen.wait_for("user:left")
    assert (left.user_id, left.username) == ("bob", "Bob")


async def test_rooms_join_and_leave(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob", "Bob")

    joined = await ada.client.join_room("lobby")
    assert (joined.room_id, joined.users) == ("lobby", ["ada"])
    assert (await ada.seen.wait_for("room:joined")).users == ["ada"]

    # The seed's client sends the bare room id; {roomId} works too.
    ack = await bob.client.sio.call("room:join", {"roomId": "lobby"})
    assert ack == {"ok": True, "roomId": "lobby", "users": ["ada", "bob"]}
    seen = await ada.seen.wait_for("room:user:joined")
    assert (seen.user_id, seen.username, seen.room_id) == ("bob", "Bob", "lobby")
    assert bob.seen.of("room:user:joined") == []

    await bob.client.leave_room("lobby")
    gone = await ada.seen.wait_for("room:user:left")
    assert (gone.user_id, gone.room_id) == ("bob", "lobby")

    await ada.client.join_room("games")
    await ada.client.disconnect()  # disconnecting leaves every room
    async with httpx.AsyncClient(base_url=chat.url) as http:

        async def rooms_empty() -> bool:
            return (await http.get("/api/rooms")).json()["count"] == 0

        await eventually(rooms_empty)


async def test_chat_messages_reach_the_whole_room_and_are_kept(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob", "Bob")
    eve = await chat.connect("eve", "Eve")  # online, but not in the room
    await ada.client.join_room("lobby")
    await bob.client.join_room("lobby")

    ids = [await ada.client.send_message("lobby", f"hello {i}") for i in range(3)]
    assert len(set(ids)) == 3 and ids == sorted(ids)  # unique, time-sortable
    got = await bob.seen.wait_for("chat:message", lambda m: m.id == ids[-1])
    assert (got.user_id, got.username, got.message, got.type, got.room_id) == (
        "ada",
        "Ada",
        "hello 2",
        "text",
        "lobby",
    )
    assert got.timestamp.endswith("Z") and "T" in got.timestamp
    await ada.seen.wait_for("chat:message", lambda m: m.id == ids[-1])  # sender included
    sent = await ada.seen.wait_for("chat:message:sent", lambda m: m.message_id == ids[-1])
    assert sent.message_id == ids[-1]

    history = await bob.client.history("lobby")
    assert [m.id for m in history] == ids
    assert [m.id for m in await bob.client.history("lobby", before=ids[2], limit=1)] == [ids[1]]

    await barrier(eve)
    assert eve.seen.of("chat:message") == []
    with pytest.raises(NotMember) as refused:
        await eve.client.history("lobby")
    assert refused.value.code == "not_member"


async def test_typing_goes_to_the_others(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob", "Bob")
    await ada.client.join_room("lobby")
    await bob.client.join_room("lobby")

    await ada.client.start_typing("lobby")
    await ada.client.start_typing("lobby")  # the seed's guard: sent once
    started = await bob.seen.wait_for("typing:start")
    assert (started.user_id, started.username, started.room_id) == ("ada", "Ada", "lobby")
    await ada.client.stop_typing("lobby")
    await ada.client.stop_typing("lobby")
    await bob.seen.wait_for("typing:stop")
    await barrier(ada, bob)
    assert len(bob.seen.of("typing:start")) == 1
    assert len(bob.seen.of("typing:stop")) == 1
    assert ada.seen.of("typing:start") == []


async def test_game_moves_go_to_the_others(chat: Chat) -> None:
    ada = await chat.connect("ada")
    bob = await chat.connect("bob")
    await ada.client.join_room("chess")
    await bob.client.join_room("chess")
    await ada.client.game_move("chess", {"from": "e2", "to": "e4"})
    move = await bob.seen.wait_for("game:move")
    assert (move.user_id, move.move, move.room_id) == ("ada", {"from": "e2", "to": "e4"}, "chess")
    await barrier(ada)
    assert ada.seen.of("game:move") == []


async def test_notifications_reach_every_connection_or_wait(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob")
    bob_tab = await chat.connect("bob")

    note_id = await ada.client.send_notification("bob", "friend", {"text": "hi"})
    for user in (bob, bob_tab):
        note = await user.seen.wait_for("notification:received")
        assert (note.id, note.from_user_id, note.to_user_id) == (note_id, "ada", "bob")
        assert (note.type, note.content, note.read) == ("friend", {"text": "hi"}, False)

    # carol is offline: the notification waits for her next connection.
    later = await ada.client.send_notification("carol", "mention", "see lobby")
    carol = await chat.connect("carol")
    note = await carol.seen.wait_for("notification:received")
    assert (note.id, note.content) == (later, "see lobby")
    carol_again = await chat.connect("carol")
    await barrier(carol_again)
    assert carol_again.seen.of("notification:received") == []  # delivered once


async def test_uploads_go_over_http_for_members_only(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob")
    eve = await chat.connect("eve")
    await ada.client.join_room("files")
    await bob.client.join_room("files")

    data = b"<script>alert(1)</script> not run, just bytes"
    upload_id = await ada.client.start_upload("files", "notes.html", len(data))
    ready = await ada.seen.wait_for("file:upload:ready")
    assert ready.upload_id == upload_id
    start = await bob.seen.wait_for("file:upload:start")
    assert (start.upload_id, start.file_name, start.file_size) == (
        upload_id,
        "notes.html",
        len(data),
    )

    url = f"/api/uploads/{upload_id}"
    ada_auth = {"Authorization": f"Bearer {token_for('ada')}"}
    async with httpx.AsyncClient(base_url=chat.url) as http:
        assert (await http.put(url, content=data)).status_code == 401
        bob_auth = {"Authorization": f"Bearer {token_for('bob')}"}
        assert (await http.put(url, content=data, headers=bob_auth)).status_code == 403
        assert (await http.put(url, content=data + b"!", headers=ada_auth)).status_code == 422
        assert (await http.get(url, headers=ada_auth)).status_code == 404  # not complete yet
        done = await http.put(url, content=data, headers=ada_auth)
        assert done.status_code == 201, done.text
        assert (await http.put(url, content=data, headers=ada_auth)).status_code == 409

        complete = await bob.seen.wait_for("file:upload:complete")
        assert (complete.upload_id, complete.user_id) == (upload_id, "ada")
        assert complete.url.startswith(url + "?")  # a link signed for bob
        got = await http.get(complete.url)
        assert got.status_code == 200 and got.content == data
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-type"] == "application/octet-stream"
        assert "attachment" in got.headers["content-disposition"]
        assert (await http.get(url, headers=bob_auth)).content == data  # a header works too
        by_query = await http.get(url, params={"token": token_for("bob")})
        assert by_query.status_code == 401  # never a session token in a URL
        eve_auth = {"Authorization": f"Bearer {token_for('eve')}"}
        assert (await http.get(url, headers=eve_auth)).status_code == 403
    await barrier(eve)
    assert eve.seen.of("file:upload:complete") == []


async def test_uploads_are_bounded(chat: Chat) -> None:
    ada = await chat.connect("ada")
    await ada.client.join_room("files")
    with pytest.raises(PayloadTooLarge):
        await ada.client.start_upload("files", "huge.bin", 10**12)
    with pytest.raises(ValidationError):
        await ada.client.start_upload("files", "../../etc/passwd", 10)
    with pytest.raises(ValidationError):
        await ada.client.start_upload("files", "x" * 300, 10)


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("chat:message", {"roomId": "secret", "message": "let me in"}),
        ("typing:start", {"roomId": "secret"}),
        ("game:move", {"roomId": "secret", "move": 1}),
        ("file:upload:start", {"roomId": "secret", "fileName": "a", "fileSize": 1}),
        ("chat:history", {"roomId": "secret"}),
        ("room:leave", "secret"),
    ],
)
async def test_members_only(memory_chat: Chat, event: str, payload: Any) -> None:
    member = await memory_chat.connect("member")
    await member.client.join_room("secret")
    outsider = await memory_chat.connect("outsider")

    ack = await outsider.client.sio.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == "not_member"
    assert "secret" in ack["error"]["message"]

    # Without an ack the refusal is an ``error`` event; the connection stays up.
    await outsider.client.sio.emit(event, payload)
    error = await outsider.seen.wait_for("error")
    assert (error.code, error.event) == ("not_member", event)
    assert outsider.client.connected
    await barrier(member)
    assert member.seen.of("chat:message") == member.seen.of("typing:start") == []


async def test_invalid_payloads_get_a_clear_error(memory_chat: Chat) -> None:
    ada = await memory_chat.connect("ada")
    await ada.client.join_room("lobby")
    cases = [
        ("chat:message", None),
        ("chat:message", "just a string"),
        ("chat:message", {"roomId": "lobby"}),
        ("chat:message", {"roomId": "lobby", "message": 42}),
        ("chat:message", {"roomId": "lobby", "message": "   "}),
        ("chat:message", {"roomId": "lobby", "message": "hi", "type": "<img>"}),
        ("room:join", ""),
        ("room:join", 12),
        ("room:join", "r" * 500),
        ("notification:send", {"targetUserId": "", "type": "x", "content": 1}),
        ("file:upload:start", {"roomId": "lobby", "fileName": "a", "fileSize": -1}),
        ("file:upload:start", {"roomId": "lobby", "fileName": "a", "fileSize": "12"}),
        ("chat:history", {"roomId": "lobby", "limit": 100000}),
    ]
    for event, payload in cases:
        ack = await ada.client.sio.call(event, payload)
        assert ack["ok"] is False, (event, payload)
        assert ack["error"]["code"] in {"invalid_payload", "payload_too_large"}, ack
        assert ack["error"]["message"]
    assert await ada.client.history("lobby") == []


async def test_messages_are_bounded_and_rate_limited(redis_url: str, redis_prefix: str) -> None:
    limits = ChatLimits(max_message_bytes=100, message_rate="4/minute")
    server = make_server(redis_url, redis_prefix, limits=limits)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        await ada.client.join_room("lobby")
        with pytest.raises(PayloadTooLarge):
            await ada.client.send_message("lobby", "é" * 51)  # 102 bytes: refused, yet counted
        for i in range(3):
            await ada.client.send_message("lobby", f"ok {i}")
        with pytest.raises(RateLimited) as limited:
            await ada.client.send_message("lobby", "one too many")
        assert 0 < limited.value.retry_after <= 60
        assert [m.message for m in await ada.client.history("lobby")] == ["ok 0", "ok 1", "ok 2"]
        await chat.close()


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (None, "token missing"),
        ({"token": ""}, "token missing"),
        ({"token": "garbage"}, "invalid"),
        ({"token": issue_token("w" * 40, "ada")}, "invalid"),
        ({"token": token_for("ada", ttl=-5)}, "expired"),
    ],
)
async def test_bad_tokens_are_refused_at_connect(memory_chat: Chat, auth: Any, reason: str) -> None:
    raw = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    raw.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await raw.connect(memory_chat.url, auth=auth, transports=["websocket"], wait_timeout=10)
    await raw.eio.disconnect(abort=True)
    assert errors and reason in errors[0]["message"]

    if auth is not None:
        with pytest.raises(AuthError, match=reason) as refused:
            await ChatClient(reconnection=False).connect(memory_chat.url, auth["token"])
        assert isinstance(refused.value, TokenExpired) == (reason == "expired")


async def test_http_listings_and_health(chat: Chat) -> None:
    ada = await chat.connect("ada", "Ada")
    bob = await chat.connect("bob", "Bob")
    await ada.client.join_room("a-room")
    await bob.client.join_room("a-room")
    await bob.client.join_room("b-room")
    async with httpx.AsyncClient(base_url=chat.url) as http:
        users = (await http.get("/api/online-users")).json()
        assert users["count"] == 2
        assert sorted((u["userId"], u["username"]) for u in users["users"]) == [
            ("ada", "Ada"),
            ("bob", "Bob"),
        ]
        assert all(u["joinTime"].endswith("Z") for u in users["users"])
        first = (await http.get("/api/online-users", params={"limit": 1})).json()
        assert len(first["users"]) == 1 and first["nextCursor"]
        second = (
            await http.get("/api/online-users", params={"limit": 1, "cursor": first["nextCursor"]})
        ).json()
        assert {first["users"][0]["userId"], second["users"][0]["userId"]} == {"ada", "bob"}

        rooms = (await http.get("/api/rooms")).json()
        assert rooms["count"] == 2
        assert sorted((r["id"], r["userCount"]) for r in rooms["rooms"]) == [
            ("a-room", 2),
            ("b-room", 1),
        ]
        assert all(r["createdAt"].endswith("Z") for r in rooms["rooms"])
        assert (await http.get("/api/rooms", params={"limit": "0"})).status_code == 422
        assert (await http.get("/api/rooms", params={"limit": "x"})).status_code == 422
        bad_cursor = await http.get("/api/online-users", params={"cursor": "\x01"})
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["error"]["code"] == "invalid_payload"
        assert (await http.get("/health")).json()["status"] == "ok"
        not_demo = await http.post("/api/demo/login", json={"name": "x"})
        assert not_demo.status_code == 404
        assert not_demo.json() == {"error": {"code": "not_found", "message": "Not Found"}}


async def test_demo_mode_serves_the_page_and_logs_anyone_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server("memory://", "rtkit:", demo=True, client_js_url='/js/io.js?a=1&b="2"')
    assert "DEMO MODE" in caplog.text
    async with serving(server) as url, httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "__RTKIT_" not in page.text
        assert 'src="/js/io.js?a=1&amp;b=&quot;2&quot;"' in page.text
        assert 'data-demo="true"' in page.text
        assert (await http.get("/static/app.js")).status_code == 200

        login = (await http.post("/api/demo/login", json={"name": "Ada Lovelace"})).json()
        assert (login["userId"], login["username"]) == ("demo-ada-lovelace", "Ada Lovelace")
        client = ChatClient(reconnection=False)
        await client.connect(url, login["token"])
        assert (await client.join_room("lobby")).users == ["demo-ada-lovelace"]
        await client.disconnect()
        bad = await http.post("/api/demo/login", json={"name": "\x00"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_payload"
        too_long = await http.post("/api/demo/login", json={"name": "x" * 65})
        assert too_long.status_code == 422


async def test_the_client_rejoins_its_rooms_after_a_lost_connection(memory_chat: Chat) -> None:
    ada = await memory_chat.connect("ada")
    bob = await memory_chat.connect("bob")
    await ada.client.join_room("lobby")
    await bob.client.join_room("lobby")

    await ada.client.sio.eio.ws.close()  # the network drops, the client reconnects

    await ada.seen.wait_for("room:joined", lambda j: j.room_id == "lobby" and len(j.users) == 2)

    async def delivered() -> bool:
        await bob.client.send_message("lobby", "are you back?")
        await asyncio.sleep(0.2)
        return any(m.message == "are you back?" for m in ada.seen.of("chat:message"))

    await eventually(delivered)


async def test_browsers_on_other_origins_must_be_allowed(memory_chat: Chat) -> None:
    async def connects(url: str, origin: str) -> bool:
        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(
                url,
                auth={"token": token_for("ada")},
                headers={"Origin": origin},
                transports=["websocket"],
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError:
            await client.eio.disconnect(abort=True)
            return False
        await client.disconnect()
        return True

    assert await connects(memory_chat.url, memory_chat.url)  # the server's own page
    assert not await connects(memory_chat.url, "http://evil.example")
    server = make_server("memory://", "rtkit:", cors_allowed_origins=["http://app.example"])
    async with serving(server) as url:
        assert await connects(url, "http://app.example")
        assert not await connects(url, "http://evil.example")


async def test_long_polling_clients_work_too(memory_chat: Chat) -> None:
    # The seed's browser client starts with HTTP long-polling before upgrading.
    ada = await memory_chat.connect("ada")
    await ada.client.join_room("lobby")
    polling = ChatClient(reconnection=False)
    await polling.connect(memory_chat.url, token_for("bob", "Bob"), transports=["polling"])
    assert (await polling.join_room("lobby")).users == ["ada", "bob"]
    await polling.send_message("lobby", "over polling")
    got = await ada.seen.wait_for("chat:message")
    assert (got.username, got.message) == ("Bob", "over polling")
    # python-socketio's client waits for its pending long-poll (up to the ping
    # interval) when it disconnects itself; a server-side disconnect is immediate.
    sid = polling.sid
    assert sid is not None
    await memory_chat.server.sio.disconnect(sid)
    assert (await ada.seen.wait_for("room:user:left")).user_id == "bob"
    await polling.disconnect()


class StaticTokens:
    """A custom verifier: a fixed table of opaque session tokens."""

    def __init__(self, table: dict[str, Identity]) -> None:
        self.table = table

    async def verify(self, token: str) -> Identity:
        try:
            return self.table[token]
        except KeyError:
            raise AuthError("unknown session") from None


async def test_a_custom_verifier_replaces_jwt() -> None:
    presence = PresenceStore.from_url("memory://")
    rooms = RoomManager.from_url("memory://", instance_id=presence.instance_id)
    server = RealtimeServer(
        presence=presence,
        rooms=rooms,
        verifier=StaticTokens({"session-1": Identity("ada", "Ada")}),
    )
    async with serving(server) as url:
        client = ChatClient(reconnection=False)
        await client.connect(url, "session-1")
        assert (await client.join_room("lobby")).users == ["ada"]
        await client.disconnect()
        with pytest.raises(AuthError, match="unknown session"):
            await ChatClient(reconnection=False).connect(url, token_for("ada"))
    # The stores were given: the server left them open.
    assert not presence.closed and not rooms.closed
    await rooms.close()
    await presence.close()


async def test_membership_is_per_user_across_tabs(memory_chat: Chat) -> None:
    tab1 = await memory_chat.connect("ada")
    tab2 = await memory_chat.connect("ada")
    await tab1.client.join_room("lobby")
    # tab2 never joined, but its user is a member: it may post (and tab1 receives).
    await tab2.client.send_message("lobby", "from the other tab")
    assert (await tab1.seen.wait_for("chat:message")).message == "from the other tab"
    await tab1.client.leave_room("lobby")
    with pytest.raises(NotMember):
        await tab2.client.send_message("lobby", "not any more")
