"""rtkit.testing.ChatTestClient: the chat's logic without sockets, what each connection gets."""

from __future__ import annotations

import pytest

from rtkit import ManualClock
from rtkit.errors import NotMember, RateLimited
from rtkit.realtime import ChatLimits
from rtkit.testing import ChatTestClient
from rtkit_testing import Backend


async def test_who_receives_what_as_on_the_server(backend: Backend) -> None:
    async with ChatTestClient(url=backend.url, prefix=backend.prefix) as chat:
        ada = await chat.connect("42", "Ada")
        bob = await chat.connect("43", "Bob")
        assert [u["userId"] for u in ada.events("users:online")[0]] == ["42"]
        assert [e["username"] for e in ada.events("user:joined")] == ["Bob"]
        assert bob.events("user:joined") == []  # not to oneself

        assert (await ada.join_room("lobby")).users == ["42"]
        await bob.join_room("lobby")
        assert (await ada.wait_for("room:user:joined"))["username"] == "Bob"
        await ada.start_typing("lobby")
        message_id = await ada.send_message("lobby", "hi")
        said = await bob.wait_for("chat:message")
        assert (said["id"], said["message"], said["username"]) == (message_id, "hi", "Ada")
        assert ada.events("chat:message") == [said]  # the whole room, sender included
        assert ada.events("chat:message:sent") == [{"messageId": message_id}]
        assert bob.names.count("typing:start") == 1 and "typing:start" not in ada.names
        assert [m.message for m in await bob.history("lobby")] == ["hi"]

        await bob.disconnect()
        assert (await ada.wait_for("room:user:left"))["userId"] == "43"
        assert (await ada.wait_for("user:left"))["userId"] == "43"
        assert [e.event for e in chat.emits].count("chat:message") == 1


async def test_refusals_come_back_as_the_wire_says_or_raise() -> None:
    async with ChatTestClient() as chat:
        eve = await chat.connect("66", "Eve")
        reply = await eve.emit("chat:message", {"roomId": "lobby", "message": "hi"})
        assert reply["ok"] is False and reply["error"]["code"] == "not_member"
        assert (await eve.emit("chat:message", {"roomId": 7}))["error"]["code"] == "invalid_payload"
        with pytest.raises(NotMember):
            await eve.send_message("lobby", "hi")
        with pytest.raises(ValueError, match="no 'chat:shout' event"):
            await eve.emit("chat:shout", {})
        assert (await eve.emit("room:join", "lobby")) == {
            "ok": True,
            "roomId": "lobby",
            "users": ["66"],
        }


async def test_the_manual_clock_gets_past_a_rate_limit() -> None:
    clock = ManualClock()
    limits = ChatLimits(message_rate="2/10 seconds")
    async with ChatTestClient(clock=clock, limits=limits) as chat:
        ada = await chat.connect("42", "Ada")
        await ada.join_room("lobby")
        await ada.send_message("lobby", "one")
        await ada.send_message("lobby", "two")
        with pytest.raises(RateLimited) as refused:
            await ada.send_message("lobby", "three")
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        clock.advance(10)
        await ada.send_message("lobby", "three")


async def test_notifications_wait_for_offline_users_and_files_go_round() -> None:
    async with ChatTestClient() as chat:
        ada = await chat.connect("42", "Ada")
        assert await ada.send_notification("43", "wave", "o/")
        bob = await chat.connect("43", "Bob")
        assert (await bob.wait_for("notification:received"))["content"] == "o/"

        await ada.join_room("lobby")
        await bob.join_room("lobby")
        url = await ada.upload("lobby", "notes.txt", b"hello")
        done = await bob.wait_for("file:upload:complete")
        assert (done["fileName"], done["fileSize"]) == ("notes.txt", 5)
        # each member's link is signed for that member: same file, another signature
        assert done["url"].split("?")[0] == url.split("?")[0] and "user=" in done["url"]
        assert bob.events("file:upload:start")[0]["fileName"] == "notes.txt"
        assert await bob.download(done["uploadId"]) == b"hello"
        eve = await chat.connect("66", "Eve")
        with pytest.raises(NotMember):
            await eve.download(done["uploadId"])


async def test_the_plugin_fixture_shares_the_test_clock(
    rtkit_chat: ChatTestClient, rtkit_clock: ManualClock
) -> None:
    assert rtkit_chat.clock is rtkit_clock
    ada = await rtkit_chat.connect("42", "Ada")
    await ada.join_room("lobby")
    rtkit_clock.advance(60)
    await ada.send_message("lobby", "a minute later")
    assert ada.events("chat:message")[0]["timestamp"].startswith("2023-11-14T22:14")
