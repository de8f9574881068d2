"""Abuse at a live server: random event names, payloads, sizes and raw packets.

Hypothesis drives a fresh attacker (a new user each example, so the per-user
rates of the default ``ChatLimits`` let its events through to the handlers) over
a real Socket.IO connection. Whatever it sends, the server stays up, ``/health``
answers, and a sentinel chat message between two other users still flows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_support import SECRET, Chat, User, serving, token_for

from rtkit.errors import RateLimited
from rtkit.realtime import ChatLimits, RealtimeServer

pytestmark = pytest.mark.slow

KNOWN = [
    "room:join",
    "room:leave",
    "chat:message",
    "chat:history",
    "typing:start",
    "typing:stop",
    "notification:send",
    "file:upload:start",
    "file:download",
    "game:move",
]
ODD = ["connect", "disconnect", "error", "message", "*", "", " ", "room:join\x00", "é" * 200]
KEYS = ["roomId", "message", "type", "targetUserId", "content", "fileName", "fileSize", "move"]

names = st.one_of(st.sampled_from(KNOWN), st.sampled_from(ODD), st.text(max_size=60))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["lobby", "sentinel", "x" * 300, "\u0000", "é" * 3000]),
    st.integers(0, 200_000).map(lambda n: "z" * n),  # sizes up to 200 KB
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=10,
)
payloads = st.one_of(
    values,
    st.fixed_dictionaries(
        {"roomId": st.sampled_from(["lobby", "sentinel"])},
        optional={k: values for k in KEYS if k != "roomId"},
    ),
)
raw_packets = st.one_of(
    st.just("2"),
    st.builds(lambda v: "2" + json.dumps(v), values),  # an event packet of any JSON
    st.builds(lambda n, v: "2" + json.dumps([n, v]), names, values),
    st.builds(lambda n, v: "25" + json.dumps([n, v]), names, values),  # with an ack id
    st.text(max_size=40),  # not even a Socket.IO packet
)
actions = st.one_of(
    st.tuples(st.just("call"), names, st.lists(payloads, max_size=3)),
    st.tuples(st.just("emit"), names, st.lists(payloads, max_size=3)),
    st.tuples(st.just("raw"), raw_packets, st.just([])),
)


@dataclass
class Arena:
    url: str
    chat: Chat
    alice: User
    bob: User
    http: httpx.AsyncClient
    counter: itertools.count[int]


@pytest.fixture
async def arena() -> AsyncIterator[Arena]:
    server = RealtimeServer.from_url("memory://", secret=SECRET, limits=ChatLimits())
    async with serving(server) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        chat = Chat(url, server)
        alice, bob = await chat.connect("alice"), await chat.connect("bob")
        await alice.client.join_room("sentinel")
        await bob.client.join_room("sentinel")
        yield Arena(url, chat, alice, bob, http, itertools.count())
        await chat.close()


async def attack(url: str, user_id: str, steps: list[tuple[str, Any, list[Any]]]) -> None:
    attacker = socketio.AsyncClient(reconnection=False)
    await attacker.connect(
        url, auth={"token": token_for(user_id)}, transports=["websocket"], wait_timeout=10
    )
    raw_sent = False  # a raw packet may be a DISCONNECT: the server then ignores the rest
    try:
        for kind, name, args in steps:
            if not attacker.connected:
                break  # the server closes a connection that sent a malformed packet
            data = tuple(args) if len(args) != 1 else args[0]
            try:
                if kind == "raw":
                    await attacker.eio.send(name)
                    raw_sent = True
                elif kind == "emit":
                    await attacker.emit(name, data)
                else:
                    reply = await attacker.call(name, data, timeout=3)
                    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
            except socketio.exceptions.TimeoutError:
                if raw_sent:
                    break
                pytest.fail(f"no answer to {name!r}")
            except socketio.exceptions.BadNamespaceError:
                break  # closed meanwhile
    finally:
        await attacker.disconnect()
        await attacker.eio.disconnect(abort=True)


async def send_politely(user: User, text: str) -> None:
    """Send ``text`` to the sentinel room, waiting as the server says when rate limited."""
    for _ in range(100):
        try:
            await user.client.send_message("sentinel", text)
            return
        except RateLimited as exc:
            await asyncio.sleep(exc.retry_after)
    pytest.fail("the sentinel could never be sent")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(actions, min_size=1, max_size=8))
async def test_abuse_never_takes_the_server_down(
    arena: Arena, steps: list[tuple[str, Any, list[Any]]]
) -> None:
    n = next(arena.counter)
    await attack(arena.url, f"attacker-{n}", steps)

    health = await arena.http.get("/health")  # answers (within the client's 5 s)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    sentinel = f"sentinel {n}"
    await send_politely(arena.alice, sentinel)
    got = await arena.bob.seen.wait_for("chat:message", lambda m: m.message == sentinel)
    assert got.user_id == "alice"
