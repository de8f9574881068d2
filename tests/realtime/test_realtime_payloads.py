"""Hypothesis throws arbitrary payloads at every event: the server never crashes, nothing leaks.

An observer sits in the attacker's room. Whatever the attacker sends, every
event is answered (ok, or an error with a code), the connection stays up, and
the observer receives exactly the chat messages the server acknowledged.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_support import FuzzRoom

EVENTS = [
    "room:join",
    "room:leave",
    "chat:message",
    "chat:history",
    "typing:start",
    "typing:stop",
    "notification:send",
    "file:upload:start",
    "game:move",
]
KEYS = [
    "roomId",
    "message",
    "type",
    "targetUserId",
    "content",
    "fileName",
    "fileSize",
    "move",
    "before",
    "limit",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["lobby", "other", "", "text", "\u0000", "x" * 300, "é" * 5000]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"roomId": st.sampled_from(["lobby", "other"])},
        optional={k: json_values for k in KEYS if k != "roomId"},
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(st.tuples(st.sampled_from(EVENTS), payloads), min_size=1, max_size=6))
async def test_arbitrary_payloads_never_crash_nor_leak(
    fuzz_room: FuzzRoom, calls: list[tuple[str, Any]]
) -> None:
    attacker, observer = fuzz_room.attacker, fuzz_room.observer
    acked: set[str] = set()
    for event, payload in calls:
        if event == "room:leave" and payload in ("lobby", {"roomId": "lobby"}):
            continue  # keep the attacker in the observed room
        ack = await attacker.client.sio.call(event, payload, timeout=10)
        assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
        if not ack["ok"]:
            assert ack["error"]["code"] and ack["error"]["message"], ack
        elif event == "chat:message":
            acked.add(ack["messageId"])
    assert attacker.client.connected
    # Every message the server acknowledged reaches the observer; nothing else does.
    await observer.client.join_room("barrier")
    for message_id in acked:
        await observer.seen.wait_for("chat:message", lambda m, i=message_id: m.id == i)
    received = {m.id for m in observer.seen.of("chat:message") if m.user_id == "attacker"}
    fuzz_room.acked |= acked
    assert received <= fuzz_room.acked


RAW_PACKETS = [
    '2["disconnect"]',  # a client may not run the server's connection handlers
    '21["disconnect"]',
    '2["connect",{"HTTP_X":"1"},{"token":"garbage"}]',
    '2["*",["not","a","sid"],{"roomId":"lobby"}]',  # the catch-all's own name
    "2",  # no data
    "2{}",  # not a list
    "2[]",  # no event name
    "2[42]",  # a name that is not a string
    '2[["a"],{"roomId":"lobby"}]',  # an unhashable name
    '2["chat:message",{"roomId":"lobby","message":"a"},"extra",3]',
]


async def test_raw_packets_cannot_spoof_or_break_a_connection(fuzz_room: FuzzRoom) -> None:
    attacker, observer = fuzz_room.attacker, fuzz_room.observer
    for raw in RAW_PACKETS:
        await attacker.client.sio.eio.send(raw)
    # Still connected, still online and in the room, still served.
    ack = await attacker.client.sio.call("chat:message", {"roomId": "lobby", "message": "ok"})
    assert ack["ok"], ack
    await observer.seen.wait_for("chat:message", lambda m: m.id == ack["messageId"])
    count = await fuzz_room.server.presence.count()
    assert (count.users, count.connections) == (2, 2)
    assert await fuzz_room.server.rooms.is_member("lobby", "attacker")
    refused = await attacker.client.sio.call("disconnect")
    assert refused["error"]["code"] == "invalid_payload"
    assert "unknown event" in refused["error"]["message"]
