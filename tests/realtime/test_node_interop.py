"""The official Node.js ``socket.io-client`` speaks to rtkit as the seed's ChatClient does.

``tests/node/interop.mjs`` (installed from the npm registry by ``make testdeps``)
connects with a token in ``auth``, joins with a bare room id, chats, types,
notifies and gets refused with bad tokens; this test checks what it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from rtkit_process import NODE_DIR, ROOT, SECRET, rtkit_serve, token_for

from rtkit.realtime import issue_token
from rtkit_testing import require
from rtkit_testing import unique_name as unique

pytestmark = [pytest.mark.node, pytest.mark.slow]

# The seed chapter sits in shared/ beside the repository (CI lays it there too).
SEED_CHAPTER = Path(
    os.environ.get("RTKIT_SEED_CHAPTER", ROOT.parent / "shared" / "seed" / "realtime-chapter.md")
)
SEED_MISSING = (
    None
    if SEED_CHAPTER.is_file()
    else f"the seed chapter is not at {SEED_CHAPTER} (set RTKIT_SEED_CHAPTER)"
)


def _require_node() -> str:
    node = shutil.which("node")
    if node is None:
        require("node is not installed")
    elif not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        require("socket.io-client is not installed (run make testdeps)")
    assert node is not None
    return node


async def _run_node(script: str, *args: str | dict[str, Any]) -> dict[str, Any]:
    """Run ``tests/node/SCRIPT ARGS`` (dicts as JSON); return the JSON it printed."""
    node = _require_node()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        *(arg if isinstance(arg, str) else json.dumps(arg) for arg in args),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_the_official_node_client_speaks_the_seed_protocol() -> None:
    room = unique("room")
    alice, bob = unique("alice"), unique("bob")
    async with rtkit_serve() as server:
        seen = await _run_node(
            "interop.mjs",
            {
                "url": server.url,
                "room": room,
                "alice": {"token": token_for(alice, "Alice"), "userId": alice},
                "bob": {"token": token_for(bob, "Bob"), "userId": bob},
                "badToken": issue_token("another-secret-" + "z" * 40, alice),
                "expiredToken": issue_token(SECRET, alice, ttl=-60),
            },
        )
    assert "error" not in seen, (seen.get("error"), seen["steps"])

    # Refused at the handshake with a clear message; the client does not retry.
    assert "invalid" in seen["badToken"]["message"]
    assert "missing" in seen["noToken"]["message"]
    assert "expired" in seen["expiredToken"]["message"]
    assert seen["expiredToken"]["data"] == {"code": "token_expired"}
    assert not seen["badToken"]["active"]

    # Presence: the newcomer gets the online list, the others see the arrival.
    assert alice in [user["userId"] for user in seen["aliceUsersOnline"]]
    assert {alice, bob} <= {user["userId"] for user in seen["bobUsersOnline"]}
    assert seen["aliceSawBobJoin"]["username"] == "Bob"

    # Rooms, joined with a bare string as the seed's joinRoom does.
    assert seen["aliceRoomJoined"] == {"roomId": room, "users": [alice]}
    assert seen["bobRoomJoined"]["roomId"] == room
    assert sorted(seen["bobRoomJoined"]["users"]) == sorted([alice, bob])
    assert seen["aliceSawBobInRoom"] == {"userId": bob, "username": "Bob", "roomId": room}

    # Typing goes to the others only.
    typing = {"userId": alice, "username": "Alice", "roomId": room}
    assert seen["bobSawTypingStart"] == typing
    assert seen["bobSawTypingStop"] == typing
    assert seen["typingEchoedToSender"] == 0

    # chat:message reaches the whole room, sender included, with one id everywhere.
    message = seen["aliceGotMessage"]
    assert message == seen["bobGotMessage"]
    assert set(message) == {"id", "userId", "username", "message", "type", "timestamp", "roomId"}
    assert message["message"] == "hello from node <b>not bold</b>"
    assert (message["userId"], message["type"], message["roomId"]) == (alice, "text", room)
    assert seen["aliceMessageSent"] == {"messageId": message["id"]}
    assert seen["ackedMessage"]["ok"] is True
    assert seen["ackedMessage"]["messageId"] > message["id"]  # time-sortable ids

    history = seen["history"]
    assert history["ok"] is True
    assert [m["message"] for m in history["messages"]] == [message["message"], "with ack"]

    notification = seen["aliceNotified"]
    assert (notification["fromUserId"], notification["toUserId"]) == (bob, alice)
    assert notification["content"] == {"text": "look at this", "roomId": room}

    # File transfer over the socket handshake and HTTP; only members may download.
    upload_id = seen["aliceUploadReady"]["uploadId"]
    announced = seen["bobSawUploadStart"]
    assert (announced["uploadId"], announced["userId"]) == (upload_id, alice)
    assert (announced["fileName"], announced["fileSize"]) == ("notes <1>.txt", 19)
    assert seen["uploadStatus"] == 201
    assert seen["bobSawUploadComplete"]["uploadId"] == upload_id
    assert seen["download"] == {"status": 200, "body": "hello file <script>"}

    move = seen["bobSawMove"]
    assert (move["userId"], move["roomId"]) == (alice, room)
    assert move["move"] == {"from": "e2", "to": "e4"}

    # Bad payloads: a typed error, nothing reaches the room, the connection stays up.
    assert seen["badPayloadAck"]["ok"] is False
    assert seen["badPayloadAck"]["error"]["code"] == "invalid_payload"
    assert seen["badPayloadError"]["event"] == "chat:message"
    assert seen["badPayloadError"]["code"] == "invalid_payload"
    assert seen["notMemberAck"] == {
        "ok": False,
        "error": {"code": "not_member", "message": seen["notMemberAck"]["error"]["message"]},
    }
    assert seen["bobQuietAfterBadPayloads"] == []
    assert seen["aliceStillConnected"] is True

    assert seen["bobSawAliceLeaveRoom"] == {"userId": alice, "username": "Alice", "roomId": room}
    assert seen["aliceSawBobLeave"]["userId"] == bob


async def test_the_seeds_own_browser_client_works_unchanged() -> None:
    """The seed's ChatClient class, read from the seed chapter, against rtkit."""
    if SEED_MISSING:  # a document beside the repository, not a backend: skip, even in CI
        pytest.skip(f"!!! {SEED_MISSING} !!!")
    room = unique("room-123")
    alice, bob = unique("alice"), unique("bob")
    async with rtkit_serve() as server:
        seen = await _run_node(
            "seed_client.mjs",
            str(SEED_CHAPTER),
            {
                "url": server.url,
                "room": room,
                "alice": {"token": token_for(alice, "Alice"), "userId": alice},
                "bob": {"token": token_for(bob, "Bob"), "userId": bob},
                "badToken": "your-jwt-token",
            },
        )
    assert "error" not in seen, (seen.get("error"), seen["logged"])
    assert "invalid" in seen["refused"]
    assert alice in [user["userId"] for user in seen["aliceOnline"]]
    assert seen["aliceSawBob"]["username"] == "Bob"
    assert seen["aliceJoined"] == {"roomId": room, "users": [alice]}
    assert seen["currentRoom"] == room  # set by the seed's own onRoomJoined
    assert seen["aliceSawBobInRoom"] == {"userId": bob, "username": "Bob", "roomId": room}
    assert (
        seen["typingStart"]
        == seen["typingStop"]
        == {
            "userId": alice,
            "username": "Alice",
            "roomId": room,
        }
    )
    assert seen["typingStarts"] == 1
    assert seen["bobMessage"] == seen["aliceMessage"]
    assert seen["bobMessage"]["message"] == "Hello World!"
    assert seen["aliceSent"] == {"messageId": seen["aliceMessage"]["id"]}
    assert seen["notification"]["content"] == f"look at room {room}"
    assert seen["aliceSawBobLeaveRoom"]["userId"] == bob
    assert seen["aliceSawBobLeave"]["userId"] == bob
    assert any("连接成功" in line for line in seen["logged"])  # the seed's own connect log
