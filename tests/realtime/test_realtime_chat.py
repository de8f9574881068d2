"""ChatService without sockets: who receives what is a return value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rtkit import ManualClock, PresenceStore, RateLimiter, RoomManager
from rtkit.errors import NotMember, RateLimited, TooManyRooms, ValidationError
from rtkit.realtime import (
    ChatLimits,
    ChatService,
    Emit,
    Identity,
    LocalFileStore,
    MessageStore,
    NotificationStore,
    UploadRegistry,
)
from rtkit_testing import PrivateRedis

ADA = Identity("ada", "Ada")
BOB = Identity("bob", "Bob")


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[ChatService]:
    clock = ManualClock(start=1_700_000_000.0)
    presence = PresenceStore.from_url("memory://", clock=clock)
    rooms = RoomManager.from_url("memory://", instance_id=presence.instance_id, clock=clock)
    service = ChatService(
        presence=presence,
        rooms=rooms,
        messages=MessageStore(),
        notifications=NotificationStore(),
        uploads=UploadRegistry(),
        files=LocalFileStore(tmp_path),
        limiter=RateLimiter(clock=clock),
        limits=ChatLimits(
            message_rate="2/minute", notification_rate="1/minute", max_rooms_per_user=2
        ),
        clock=clock,
    )
    yield service
    for part in (rooms, presence, service.messages, service.notifications, service.uploads):
        await part.close()


def targets(emits: list[Emit]) -> list[tuple[str, str | None, str | None]]:
    return [(e.event, e.to, e.skip_sid) for e in emits]


async def test_first_connection_is_announced_to_the_others(chat: ChatService) -> None:
    first = await chat.connect(ADA, "sid-a1")
    assert first.enter == ["user:ada"]
    assert targets(first.emits) == [("user:joined", None, "sid-a1")]
    assert first.emits[0].data == {
        "userId": "ada",
        "username": "Ada",
        "time": "2023-11-14T22:13:20.000Z",
    }
    assert (await chat.connect(ADA, "sid-a2")).emits == []
    welcome = await chat.welcome(ADA, "sid-a2")
    assert targets(welcome) == [("users:online", "sid-a2", None)]
    assert welcome[0].data == [
        {"userId": "ada", "username": "Ada", "joinTime": "2023-11-14T22:13:20.000Z"}
    ]
    assert await chat.disconnect(ADA, "sid-a1") == []
    assert targets(await chat.disconnect(ADA, "sid-a2")) == [("user:left", None, "sid-a2")]


async def test_room_traffic(chat: ChatService) -> None:
    await chat.connect(ADA, "a")
    await chat.connect(BOB, "b")
    joined = await chat.join_room(ADA, "a", "lobby")
    assert joined.enter == ["room:lobby"]
    assert joined.ack == {"roomId": "lobby", "users": ["ada"]}
    assert targets(joined.emits) == [
        ("room:user:joined", "room:lobby", "a"),
        ("room:joined", "a", None),
    ]
    await chat.join_room(BOB, "b", {"roomId": "lobby"})

    sent = await chat.send_message(ADA, "a", {"roomId": "lobby", "message": "hi"})
    message_id = sent.ack["messageId"]
    assert targets(sent.emits) == [
        ("chat:message", "room:lobby", None),
        ("chat:message:sent", "a", None),
    ]
    assert sent.emits[0].data["id"] == message_id
    typing = await chat.typing(BOB, "b", {"roomId": "lobby"}, started=True)
    assert targets(typing.emits) == [("typing:start", "room:lobby", "b")]
    move = await chat.game_move(BOB, "b", {"roomId": "lobby", "move": "e4"})
    assert targets(move.emits) == [("game:move", "room:lobby", "b")]
    history = await chat.history(BOB, "b", {"roomId": "lobby"})
    assert [m["id"] for m in history.ack["messages"]] == [message_id]

    left = await chat.leave_room(BOB, "b", "lobby")
    assert left.leave == ["room:lobby"]
    assert targets(left.emits) == [("room:user:left", "room:lobby", "b")]
    assert targets(await chat.disconnect(ADA, "a")) == [
        ("room:user:left", "room:lobby", "a"),
        ("user:left", None, "a"),
    ]


async def test_refusals_change_nothing(chat: ChatService) -> None:
    await chat.connect(ADA, "a")
    await chat.join_room(ADA, "a", "lobby")
    await chat.connect(BOB, "b")
    with pytest.raises(NotMember):
        await chat.send_message(BOB, "b", {"roomId": "lobby", "message": "hi"})
    for _ in range(2):
        await chat.send_message(ADA, "a", {"roomId": "lobby", "message": "hi"})
    with pytest.raises(RateLimited) as limited:
        await chat.send_message(ADA, "a", {"roomId": "lobby", "message": "hi"})
    assert limited.value.retry_after > 0
    assert len((await chat.history(ADA, "a", {"roomId": "lobby"})).ack["messages"]) == 2


@pytest.mark.parametrize("online", [True, False])
async def test_notifications_go_to_the_user_or_wait(chat: ChatService, online: bool) -> None:
    await chat.connect(ADA, "a")
    if online:
        await chat.connect(BOB, "b")
    payload: dict[str, Any] = {"targetUserId": "bob", "type": "ping", "content": [1]}
    sent = await chat.send_notification(ADA, "a", payload)
    assert sent.ack["delivered"] is online
    if online:
        assert targets(sent.emits) == [("notification:received", "user:bob", None)]
    else:
        assert sent.emits == []
        await chat.connect(BOB, "b")
        welcome = await chat.welcome(BOB, "b")
        assert targets(welcome)[-1] == ("notification:received", "b", None)
        assert welcome[-1].data["id"] == sent.ack["notificationId"]


async def test_rooms_per_user_and_notifications_are_bounded(chat: ChatService) -> None:
    await chat.connect(ADA, "a")
    await chat.join_room(ADA, "a", "one")
    await chat.join_room(ADA, "a", "two")
    await chat.join_room(ADA, "a", "two")  # already in it: fine
    with pytest.raises(TooManyRooms) as refused:
        await chat.join_room(ADA, "a", "three")
    assert refused.value.code == "too_many_rooms"
    assert await chat.rooms.rooms_of("ada") == ["one", "two"]

    await chat.send_notification(ADA, "a", {"targetUserId": "bob", "type": "x"})
    with pytest.raises(RateLimited):
        await chat.send_notification(ADA, "a", {"targetUserId": "bob", "type": "x"})
    assert len(await chat.notifications.take("bob")) == 1


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_history_keeps_file_shares_joins_and_leaves(chat: ChatService) -> None:
    await chat.connect(ADA, "a")
    await chat.connect(BOB, "b1")
    await chat.connect(BOB, "b2")
    await chat.join_room(ADA, "a", "lobby")
    await chat.join_room(BOB, "b1", "lobby")
    await chat.join_room(BOB, "b2", "lobby")  # Bob is in the room already: no second join
    said = await chat.send_message(BOB, "b1", {"roomId": "lobby", "message": "hi"})
    ready = await chat.start_upload(
        BOB, "b1", {"roomId": "lobby", "fileName": "plan.txt", "fileSize": 4}
    )
    upload_id = ready.ack["uploadId"]
    done = await chat.receive_upload(BOB, upload_id, _body(b"plan"), size=4)
    await chat.leave_room(BOB, "b1", "lobby")  # Bob is still in it on b2: no leave yet
    await chat.disconnect(BOB, "b2")  # now he left
    await chat.join_room(BOB, "b1", "lobby")
    await chat.leave_room(BOB, "b1", "lobby")

    everything = {"roomId": "lobby", "kinds": ["message", "file", "join", "leave"]}
    entries = (await chat.history(ADA, "a", everything)).ack["messages"]
    assert [(e["kind"], e["userId"]) for e in entries] == [
        ("join", "ada"),
        ("join", "bob"),
        ("message", "bob"),
        ("file", "bob"),
        ("leave", "bob"),
        ("join", "bob"),
        ("leave", "bob"),
    ]
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert entries[1] == {
        "kind": "join",
        "id": entries[1]["id"],
        "userId": "bob",
        "username": "Bob",
        "timestamp": "2023-11-14T22:13:20.000Z",
        "roomId": "lobby",
    }
    assert entries[2]["id"] == said.ack["messageId"]
    shared = entries[3]
    assert shared == {
        "kind": "file",
        "id": shared["id"],
        "uploadId": upload_id,
        "userId": "bob",
        "username": "Bob",
        "fileName": "plan.txt",
        "fileSize": 4,
        "timestamp": "2023-11-14T22:13:20.000Z",
        "roomId": "lobby",
    }
    # Every member's file:upload:complete carries the entry's id, name and time too.
    complete = [e.data for e in done.emits if e.event == "file:upload:complete"]
    assert {(c["id"], c["username"], c["timestamp"]) for c in complete} == {
        (shared["id"], "Bob", shared["timestamp"])
    }

    # Without kinds, chat:history answers chat messages only, as it always did.
    plain = (await chat.history(ADA, "a", {"roomId": "lobby"})).ack["messages"]
    assert [(e["kind"], e["message"]) for e in plain] == [("message", "hi")]
    some = {"roomId": "lobby", "kinds": ["leave"], "limit": 1}
    assert [e["kind"] for e in (await chat.history(ADA, "a", some)).ack["messages"]] == ["leave"]
    for bad in (["poll"], [], "join", ["join"] * 9):
        with pytest.raises(ValidationError):
            await chat.history(ADA, "a", {"roomId": "lobby", "kinds": bad})


@pytest.mark.redis
async def test_a_join_or_leave_happens_even_when_history_cannot_keep_it(
    private_redis: PrivateRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    presence = PresenceStore.from_url("memory://")
    rooms = RoomManager.from_url("memory://", instance_id=presence.instance_id)
    messages = MessageStore.from_url(private_redis.url, prefix="rtkit-history-fault:")
    chat = ChatService(
        presence=presence,
        rooms=rooms,
        messages=messages,
        notifications=NotificationStore(),
        uploads=UploadRegistry(),
        files=LocalFileStore(tmp_path),
    )
    await chat.connect(ADA, "a")
    await chat.connect(BOB, "b")
    await chat.join_room(ADA, "a", "lobby")
    private_redis.stop()  # history is gone; presence and rooms are fine
    joined = await chat.join_room(BOB, "b", "lobby")
    assert targets(joined.emits)[0] == ("room:user:joined", "room:lobby", "b")
    left = await chat.disconnect(BOB, "b")
    assert targets(left) == [("room:user:left", "room:lobby", "b"), ("user:left", None, "b")]
    assert "could not keep a join in the history of room 'lobby'" in caplog.text
    assert "could not keep a leave in the history of room 'lobby'" in caplog.text
    for part in (rooms, presence, messages, chat.notifications, chat.uploads):
        await part.close()
