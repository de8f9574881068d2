"""Connection state recovery with the official Node ``socket.io-client``.

``tests/node/recovery.mjs`` keeps a listener in a room while a sender sends
messages, closes the listener's engine mid-stream (``engine.close()``) and lets
it reconnect: to the same instance, or through a small round-robin TCP proxy
run here to the other instance (Redis). Every message must arrive exactly once,
in order, with ``recovered === true`` after each reconnect; after the recovery
time ``recovered`` is false and the session is a new one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import socketio
from realtime_support import make_server, serving, token_for
from rtkit_process import NODE_DIR

from rtkit.realtime._recovery import MemoryRecoveryStore, RedisRecoveryStore, offset_key
from rtkit.realtime._sessions import socketio_channel
from rtkit.realtime._socketio_compat import (
    AckAwareServer,
    RecoveringManager,
    RecoveringRedisManager,
    initialize_manager,
    stop_manager,
)
from rtkit_testing import Backend, require
from rtkit_testing import unique_name as unique

pytestmark = [pytest.mark.node, pytest.mark.slow]

PRESENCE_EVENTS = ["user:left", "user:joined", "room:user:left", "room:user:joined"]


async def _run_node(config: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        require("node and socket.io-client are needed (make testdeps)")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "recovery.mjs"),
        json.dumps(config),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=150)
    assert proc.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, (result["error"], result["connects"], result["errors"])
    return result


@asynccontextmanager
async def round_robin(*urls: str) -> AsyncIterator[str]:
    """A TCP proxy on a free port that sends each new connection to the next of ``urls``."""
    targets = [urlsplit(url) for url in urls]
    turn = 0
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal turn
        target = targets[turn % len(targets)]
        turn += 1
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proxy.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await proxy.wait_closed()


def _chat_config(listen: str, send: str, room: str, **extra: Any) -> dict[str, Any]:
    listener, sender = unique("listener"), unique("sender")
    return {
        "listenUrl": listen,
        "senderUrl": send,
        "token": token_for(listener, "Listener"),
        "senderToken": token_for(sender, "Sender"),
        "join": {"event": "room:join", "data": {"roomId": room}},
        "send": {"event": "chat:message", "data": {"roomId": room}},
        "listen": "chat:message",
        "watch": PRESENCE_EVENTS,
        "listener": listener,
        **extra,
    }


def _check_exactly_once(seen: dict[str, Any], count: int, cuts: int, others: int = 0) -> None:
    received = seen["received"]
    expected = {str(i) for i in range(count)}
    expected |= {f"{n}:{i}" for n in range(1, others + 1) for i in range(count)}
    assert len(received) == len(expected)  # no duplicate...
    assert set(received) == expected  # ... and no loss
    # in the order the server sent them (several in flight may be handled out of order)
    keys = [offset_key(offset) for offset in seen["offsets"]]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(expected)
    connects = seen["connects"]
    assert len(connects) == cuts + 1
    assert [c["recovered"] for c in connects] == [False] + [True] * cuts
    assert {c["id"] for c in connects} == {connects[0]["id"]}  # the same socket id


def _no_flicker(seen: dict[str, Any], user_id: str) -> None:
    assert [w for w in seen["watched"] if w["userId"] == user_id] == []


async def test_a_listener_recovers_three_times_on_the_same_instance() -> None:
    server = make_server("memory://", "rtkit:", max_disconnection_duration=30)
    async with serving(server) as url:
        room = unique("room")
        config = _chat_config(url, url, room, count=1000, cuts=[150, 500, 850], window=50)
        seen = await _run_node(config)
    _check_exactly_once(seen, 1000, 3)
    _no_flicker(seen, config["listener"])


@pytest.mark.redis
async def test_a_listener_recovers_on_the_other_instance(redis_url: str, redis_prefix: str) -> None:
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(2):
            server = make_server(redis_url, redis_prefix, max_disconnection_duration=30)
            urls.append(await stack.enter_async_context(serving(server)))
        proxy = await stack.enter_async_context(round_robin(*urls))
        room = unique("room")
        # first connect: instance 0, then 1, 0, 1: every recovery changes instance; a
        # second sender on instance 1 meanwhile (two instances publish at once)
        other = {"url": urls[1], "token": token_for(unique("other"), "Other")}
        config = _chat_config(
            proxy, urls[0], room, count=1000, cuts=[150, 500, 850], window=50, others=[other]
        )
        seen = await _run_node(config)
    _check_exactly_once(seen, 1000, 3, others=1)
    _no_flicker(seen, config["listener"])


async def test_after_the_recovery_time_the_session_is_new(backend: Backend) -> None:
    server = make_server(backend.url, backend.prefix, max_disconnection_duration=0.5)
    async with serving(server) as served:
        room = unique("room")
        config = _chat_config(
            served,
            served,
            room,
            count=3,
            cuts=[1],
            reconnectMs=2500,
            expectAll=False,
            drainBeforeCut=True,
        )
        seen = await _run_node(config)
    first, second = seen["connects"]
    assert (first["recovered"], second["recovered"]) == (False, False)
    assert first["id"] != second["id"]
    assert seen["received"][:1] == ["0"]
    assert "1" not in seen["received"]  # sent in the gap, to a session that expired
    # the others saw the user go when the recovery time passed, and come back
    mine = [w["event"] for w in seen["watched"] if w["userId"] == config["listener"]]
    assert mine == ["room:user:left", "user:left", "user:joined"]


# ---------------------------------------------------------------- protocol level


def _plain_server(manager: socketio.AsyncManager) -> AckAwareServer:
    """A Socket.IO server that sends no event of its own: ``join`` enters a room, ``send``
    emits ``msg`` to it (the zero-event case needs a client that saw nothing yet)."""
    sio = AckAwareServer(async_mode="asgi", client_manager=manager)

    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["room"])
        return {"ok": True}

    async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.emit("msg", {"message": data["message"]}, to=data["room"])
        return {"ok": True}

    sio.on("connect", lambda sid, environ, auth: True)
    sio.on("join", join)
    sio.on("send", send)
    return sio


@asynccontextmanager
async def plain_served(manager: socketio.AsyncManager) -> AsyncIterator[str]:
    sio = _plain_server(manager)
    initialize_manager(sio)
    try:
        async with serving(socketio.ASGIApp(sio)) as url:
            yield url
    finally:
        await stop_manager(sio, close_redis=True)


def _plain_config(listen: str, send: str, room: str, **extra: Any) -> dict[str, Any]:
    return {
        "listenUrl": listen,
        "senderUrl": send,
        "token": "unused",
        "senderToken": "unused",
        "join": {"event": "join", "data": {"room": room}, "sender": False},
        "send": {"event": "send", "data": {"room": room}},
        "listen": "msg",
        **extra,
    }


async def test_zero_event_and_repeated_recovery_in_memory() -> None:
    manager = RecoveringManager(MemoryRecoveryStore(duration=30))
    async with plain_served(manager) as url:
        # cut before the first message: the client saw no event, sends no offset
        seen = await _run_node(_plain_config(url, url, unique("room"), count=200, cuts=[0, 1, 2]))
    _check_exactly_once(seen, 200, 3)


@pytest.mark.redis
async def test_zero_event_recovery_on_another_instance(
    redis_url: str, redis_prefix: str, redis_client: Any
) -> None:
    channel = socketio_channel(redis_prefix, redis_client)
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(2):
            store = RedisRecoveryStore(redis_client, prefix=redis_prefix, duration=30)
            stack.push_async_callback(store.close)
            manager = RecoveringRedisManager(redis_url, channel=channel, store=store)
            urls.append(await stack.enter_async_context(plain_served(manager)))
        proxy = await stack.enter_async_context(round_robin(*urls))
        config = _plain_config(proxy, urls[0], unique("room"), count=200, cuts=[0, 1, 2])
        seen = await _run_node(config)
    _check_exactly_once(seen, 200, 3)
