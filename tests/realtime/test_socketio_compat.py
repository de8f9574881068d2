"""The python-socketio internals rtkit relies on (``realtime/_socketio_compat.py``) still exist.

When a python-socketio release changes one of them, a test here fails and its
message names the attribute; fix ``_socketio_compat.py`` (and the version range
in ``pyproject.toml``) before anything else.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio
from realtime_support import serving
from socketio.async_pubsub_manager import AsyncPubSubManager

from rtkit.realtime._socketio_compat import (
    AckAwareServer,
    ack_wanted,
    initialize_manager,
    is_connected,
    stop_manager,
)

VERSION = getattr(socketio, "__version__", "?")


def _changed(part: str, how: str) -> str:
    return f"python-socketio {VERSION} changed {part}: {how}; update rtkit's _socketio_compat.py"


def test_handle_event_internal_is_still_there() -> None:
    handle = getattr(socketio.AsyncServer, "_handle_event_internal", None)
    assert handle is not None, _changed("AsyncServer._handle_event_internal", "it is gone")
    assert inspect.iscoroutinefunction(handle), _changed(
        "AsyncServer._handle_event_internal", "it is no longer a coroutine function"
    )
    params = tuple(inspect.signature(handle).parameters)
    expected = ("self", "server", "sid", "eio_sid", "data", "namespace", "id")
    assert params == expected, _changed(
        "AsyncServer._handle_event_internal", f"it takes {params}, not {expected}"
    )
    source = inspect.getsource(socketio.AsyncServer._handle_event)
    assert "self._handle_event_internal" in source, _changed(
        "AsyncServer._handle_event", "it no longer calls _handle_event_internal"
    )


def test_handle_event_is_still_there() -> None:
    handle = getattr(socketio.AsyncServer, "_handle_event", None)
    assert handle is not None, _changed("AsyncServer._handle_event", "it is gone")
    params = tuple(inspect.signature(handle).parameters)
    expected = ("self", "eio_sid", "namespace", "id", "data")
    assert params == expected, _changed(
        "AsyncServer._handle_event", f"it takes {params}, not {expected}"
    )
    assert socketio.AsyncServer.reserved_events == ["connect", "disconnect"], _changed(
        "AsyncServer.reserved_events", "its list changed"
    )
    source = inspect.getsource(socketio.AsyncServer._handle_eio_message)
    assert "self._handle_event(" in source, _changed(
        "AsyncServer._handle_eio_message", "it no longer calls _handle_event"
    )
    params = tuple(inspect.signature(socketio.AsyncServer._handle_eio_message).parameters)
    assert params == ("self", "eio_sid", "data"), _changed(
        "AsyncServer._handle_eio_message", f"it takes {params}, not (self, eio_sid, data)"
    )


def test_the_manager_flags_and_methods_are_still_there() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    assert getattr(sio, "manager_initialized", None) is False, _changed(
        "AsyncServer.manager_initialized", "it is gone or not False before the first connection"
    )
    assert callable(getattr(sio.manager, "initialize", None)), _changed(
        "AsyncManager.initialize", "it is gone"
    )
    is_conn = getattr(sio.manager, "is_connected", None)
    assert callable(is_conn), _changed("AsyncManager.is_connected", "it is gone")
    params = tuple(inspect.signature(is_conn).parameters)
    assert params == ("sid", "namespace"), _changed(
        "AsyncManager.is_connected", f"it takes {params}, not (sid, namespace)"
    )
    initialize_manager(sio)
    assert sio.manager_initialized is True
    assert not is_connected(sio, "no-such-sid")


def test_the_redis_manager_attributes_are_still_there() -> None:
    manager = socketio.AsyncRedisManager("redis://127.0.0.1:1/0", channel="x")
    assert "redis" in vars(manager), _changed("AsyncRedisManager.redis", "it is gone")
    source = inspect.getsource(AsyncPubSubManager.initialize)
    assert "self.thread = " in source, _changed(
        "AsyncPubSubManager.initialize", "it no longer keeps its listener task in manager.thread"
    )


@pytest.mark.redis
async def test_the_redis_listener_starts_and_stops(redis_url: str, redis_prefix: str) -> None:
    for delay in (0.0, 0.05, 0.3):  # a cancellation may land mid-command: stopped anyway
        manager = socketio.AsyncRedisManager(redis_url, channel=redis_prefix + "socketio")
        sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
        initialize_manager(sio)
        thread = getattr(manager, "thread", None)
        assert isinstance(thread, asyncio.Task), _changed(
            "AsyncPubSubManager.thread", f"it is {thread!r}, not the listener task"
        )
        await asyncio.sleep(delay)
        await stop_manager(sio, close_redis=True)
        assert thread.done()


class _Recorder:
    def __init__(self) -> None:
        self.wanted: list[bool] = []

    async def handler(self, sid: str, data: Any = None) -> dict[str, bool]:
        self.wanted.append(ack_wanted())
        return {"ok": True}


@pytest.fixture
async def ack_server() -> AsyncIterator[tuple[str, _Recorder]]:
    sio = AckAwareServer(async_mode="asgi")
    recorder = _Recorder()
    sio.on("probe", recorder.handler)
    async with serving(socketio.ASGIApp(sio)) as url:
        yield url, recorder
    await stop_manager(sio, close_redis=False)


async def test_a_handler_knows_whether_the_client_wants_an_ack(
    ack_server: tuple[str, _Recorder],
) -> None:
    url, recorder = ack_server
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        assert await client.call("probe", 1, timeout=10) == {"ok": True}
        await client.emit("probe", 2)
        assert await client.call("probe", 3, timeout=10) == {"ok": True}
    finally:
        await client.disconnect()
    assert recorder.wanted == [True, False, True], _changed(
        "AsyncServer._handle_event_internal", "its id argument no longer says whether to ack"
    )


def test_the_manager_parts_the_node_adapter_manager_relies_on() -> None:
    """``managers/node_redis.py`` subclasses ``AsyncManager`` and reads its room table."""
    manager = socketio.AsyncManager()
    for sid, eio_sid in (("s1", "e1"), ("s2", "e2")):
        manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, "/", sid, eio_sid=eio_sid)
    manager.basic_enter_room("s1", "/", "red")
    manager.basic_enter_room("s2", "/", "blue")
    assert manager.rooms["/"]["red"]["s1"] == "e1", _changed("AsyncManager.rooms", "its shape")
    union = sorted(manager.get_participants("/", ["red", "blue"]))
    assert union == [("s1", "e1"), ("s2", "e2")], _changed(
        "AsyncManager.get_participants", "a list of rooms is no longer their union"
    )
    assert sorted(manager.get_rooms("s1", "/")) == ["red", "s1"], _changed(
        "AsyncManager.get_rooms", "it no longer lists a sid's rooms with its own"
    )
    assert manager.is_sid_room("/", "s1"), _changed("AsyncManager.is_sid_room", "it is gone")
    for name in ("connect", "disconnect", "emit", "enter_room", "leave_room", "can_disconnect"):
        assert inspect.iscoroutinefunction(getattr(socketio.AsyncManager, name)), _changed(
            f"AsyncManager.{name}", "it is no longer a coroutine function"
        )
    params = inspect.signature(socketio.AsyncServer.disconnect).parameters
    assert "ignore_queue" in params, _changed("AsyncServer.disconnect", "no ignore_queue")
    assert hasattr(socketio.AsyncServer, "get_environ"), _changed("get_environ", "it is gone")
