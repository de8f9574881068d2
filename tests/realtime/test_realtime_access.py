"""The room access hook: ``authorize_join(identity, room_id)`` closes the open joins.

Without it anyone may join any room (the seed's behaviour, and the default); with
it, a join it does not answer ``True`` is ``forbidden`` and changes nothing.
"""

from __future__ import annotations

import asyncio

import pytest
from realtime_support import Chat, make_server, serving

from rtkit.errors import Forbidden
from rtkit.realtime import Identity


def teams_only(who: Identity, room_id: str) -> bool:
    """``team:<name>`` rooms for members of that team; ``public:*`` rooms for anyone."""
    if room_id.startswith("public:"):
        return True
    return room_id == f"team:{who.user_id.split('@')[1]}"


async def teams_only_async(who: Identity, room_id: str) -> bool:
    await asyncio.sleep(0)
    return teams_only(who, room_id)


@pytest.mark.parametrize("hook", [teams_only, teams_only_async], ids=["sync", "async"])
async def test_authorize_join_refuses_with_forbidden(hook: object) -> None:
    server = make_server("memory://", "rtkit:", authorize_join=hook)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada@red")
        eve = await chat.connect("eve@blue")
        await ada.client.join_room("team:red")
        await ada.client.join_room("public:lobby")
        with pytest.raises(Forbidden, match="team:red"):
            await eve.client.join_room("team:red")
        ack = await eve.client.sio.call("room:join", "team:red")
        assert ack["error"]["code"] == "forbidden"
        # Refused joins change nothing: eve is in no room, and nobody was told.
        assert await server.rooms.rooms_of("eve@blue") == []
        await ada.client.join_room("public:barrier")
        assert [e.user_id for e in ada.seen.of("room:user:joined")] == []
        ack = await eve.client.sio.call("chat:message", {"roomId": "team:red", "message": "hi"})
        assert ack["error"]["code"] == "not_member"
        await eve.client.join_room("public:lobby")
        await chat.close()


async def test_a_hook_that_returns_nothing_refuses() -> None:
    server = make_server("memory://", "rtkit:", authorize_join=lambda who, room: None)
    async with serving(server) as url:
        chat = Chat(url, server)
        ada = await chat.connect("ada")
        with pytest.raises(Forbidden):
            await ada.client.join_room("lobby")
        await chat.close()


async def test_without_a_hook_joins_are_open(memory_chat: Chat) -> None:
    ada = await memory_chat.connect("ada")
    assert (await ada.client.join_room("anything")).users == ["ada"]
