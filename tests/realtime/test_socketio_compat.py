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

from rtkit.realtime._recovery import MemoryRecoveryStore
from rtkit.realtime._socketio_compat import (
    AckAwareServer,
    RecoveringClient,
    RecoveringManager,
    ack_wanted,
    initialize_manager,
    is_connected,
    pid_of,
    recovered_from,
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


# ------------------------------------------------------------ connection state recovery


def _params(function: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def test_the_connect_and_disconnect_internals_are_still_there() -> None:
    server = socketio.AsyncServer
    expected = {
        "_handle_connect": ("self", "eio_sid", "namespace", "data"),
        "_handle_disconnect": ("self", "eio_sid", "namespace", "reason"),
        "_trigger_event": ("self", "event", "namespace", "args"),
        "_send_packet": ("self", "eio_sid", "pkt"),
        "_send_eio_packet": ("self", "eio_sid", "eio_pkt"),
    }
    for name, params in expected.items():
        method = getattr(server, name, None)
        assert method is not None, _changed(f"AsyncServer.{name}", "it is gone")
        assert _params(method) == params, _changed(
            f"AsyncServer.{name}", f"it takes {_params(method)}, not {params}"
        )
    source = inspect.getsource(server._handle_eio_message)
    assert "self._handle_connect(" in source and "self._handle_disconnect(" in source, _changed(
        "AsyncServer._handle_eio_message", "it no longer calls _handle_connect/_handle_disconnect"
    )
    assert "self._handle_disconnect(" in inspect.getsource(server._handle_eio_disconnect)
    sio = socketio.AsyncServer(async_mode="asgi")
    for name in ("environ", "handlers", "namespace_handlers", "namespaces", "packet_class"):
        assert hasattr(sio, name), _changed(f"AsyncServer.{name}", "it is gone")
    reasons = {sio.reason.TRANSPORT_CLOSE, sio.reason.TRANSPORT_ERROR, sio.reason.PING_TIMEOUT}
    assert reasons == {"transport close", "transport error", "ping timeout"}, _changed(
        "AsyncServer.reason", "the reasons of a lost connection are named differently"
    )


def test_the_manager_tables_are_still_there() -> None:
    manager = socketio.AsyncManager()
    for name in ("rooms", "pending_connect", "callbacks"):
        assert isinstance(getattr(manager, name, None), dict), _changed(
            f"AsyncManager.{name}", "it is gone or not a dict"
        )
    for name, params in {
        "basic_enter_room": ("sid", "namespace", "room", "eio_sid"),
        "basic_disconnect": ("sid", "namespace", "kwargs"),
        "get_participants": ("namespace", "room"),
        "get_rooms": ("sid", "namespace"),
        "sid_from_eio_sid": ("eio_sid", "namespace"),
        "eio_sid_from_sid": ("sid", "namespace"),
        "pre_connect": ("eio_sid", "namespace"),
    }.items():
        method = getattr(manager, name, None)
        assert method is not None, _changed(f"AsyncManager.{name}", "it is gone")
        assert _params(method) == params, _changed(
            f"AsyncManager.{name}", f"it takes {_params(method)}, not {params}"
        )
    disconnect = inspect.getsource(socketio.AsyncManager.disconnect)
    assert "self.basic_disconnect(" in disconnect, _changed(
        "AsyncManager.disconnect", "it no longer calls basic_disconnect"
    )


def test_the_pubsub_message_format_is_still_there() -> None:
    emit = inspect.getsource(AsyncPubSubManager.emit)
    for key in ("'method': 'emit'", "'event'", "'data'", "'namespace'", "'room'", "'skip_sid'"):
        assert key in emit, _changed("AsyncPubSubManager.emit", f"its message has no {key}")
    thread = inspect.getsource(AsyncPubSubManager._thread)
    assert "self._handle_emit(data)" in thread and "host_id" in thread, _changed(
        "AsyncPubSubManager._thread", "it no longer hands other hosts' emits to _handle_emit"
    )
    manager = socketio.AsyncRedisManager("redis://127.0.0.1:1/0", channel="x")
    assert manager.channel == "x" and hasattr(manager, "json")


def test_the_client_internals_are_still_there() -> None:
    client = socketio.AsyncClient
    assert _params(client._handle_connect) == ("self", "namespace", "data"), _changed(
        "AsyncClient._handle_connect", "its parameters changed"
    )
    assert _params(client._handle_event) == ("self", "namespace", "id", "data"), _changed(
        "AsyncClient._handle_event", "its parameters changed"
    )


async def test_a_recovered_connection_gets_its_sid_rooms_and_missed_events() -> None:
    """python-socketio's client, with RecoveringClient's auth, against the compat server."""
    manager = RecoveringManager(MemoryRecoveryStore(duration=30))
    sio = AckAwareServer(async_mode="asgi", client_manager=manager)

    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)

    sio.on("join", join)
    async with serving(socketio.ASGIApp(sio)) as url:
        client = RecoveringClient(
            reconnection_delay=0.5, reconnection_delay_max=0.5, randomization_factor=0
        )
        got: list[tuple[Any, ...]] = []
        lost: list[Any] = []
        client.on("msg", lambda *args: got.append(args))
        client.on("disconnect", lambda reason: lost.append(reason))
        await client.connect(url, auth=lambda: client.resume_auth({}), transports=["websocket"])
        first_sid, first_pid = client.get_sid(), client.pid
        assert first_pid is not None and not client.recovered
        await client.call("join", "r", timeout=10)
        await sio.emit("msg", "one", to="r")
        await _until(lambda: len(got) == 1)
        await client.eio.ws.close()  # lost, as by the network
        await _until(lambda: bool(lost))
        await sio.emit("msg", "two", to="r")  # missed (the client waits 0.5 s to reconnect)
        await _until(lambda: client.connected)
        await sio.emit("msg", "three", to="r")
        await _until(lambda: len(got) == 3)
        try:
            assert [args[0] for args in got] == ["one", "two", "three"]
            assert all(isinstance(args[-1], str) for args in got)  # offsets, as in Node
            assert client.recovered and client.get_sid() == first_sid
            assert recovered_from(sio, first_sid) is not None
            assert pid_of(sio, first_sid) == first_pid
            # Again, with a room entered since: the state of the last loss, not the first
            await client.call("join", "r2", timeout=10)
            await client.eio.ws.close()
            await _until(lambda: len(lost) == 2)
            await sio.emit("msg", "four", to="r2")  # missed
            await _until(lambda: len(got) == 4)
            assert got[-1][0] == "four" and client.recovered and client.get_sid() == first_sid
        finally:
            await client.disconnect()
    await stop_manager(sio, close_redis=False)


async def _until(check: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (polls a client's state)
            await asyncio.sleep(0.01)


async def test_a_client_back_before_its_old_connection_ended_takes_it_over() -> None:
    """The client reconnects with its pid while the server still holds its old connection
    (it had not noticed the loss yet): the old one ends as lost, the new one recovers."""
    manager = RecoveringManager(MemoryRecoveryStore(duration=30))
    sio = AckAwareServer(async_mode="asgi", client_manager=manager)

    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)

    sio.on("join", join)
    async with serving(socketio.ASGIApp(sio)) as url:
        old = RecoveringClient(reconnection=False)
        old_lost: list[Any] = []
        old.on("disconnect", lambda reason: old_lost.append(reason))
        await old.connect(url, auth=lambda: old.resume_auth({}), transports=["websocket"])
        await old.call("join", "r", timeout=10)
        await sio.emit("msg", "one", to="r")
        new = RecoveringClient(reconnection=False)
        got: list[Any] = []
        new.on("msg", lambda *args: got.append(args[0]))
        new.pid, new.offset = old.pid, None  # as if it saw nothing
        await new.connect(url, auth=lambda: new.resume_auth({}), transports=["websocket"])
        try:
            assert new.recovered and new.get_sid() == old.get_sid()
            await _until(lambda: bool(old_lost))
            await _until(lambda: got == ["one"])  # what the old connection was sent
            await sio.emit("msg", "two", to="r")
            await _until(lambda: got == ["one", "two"])
        finally:
            await new.disconnect()
            await old.disconnect()
    await stop_manager(sio, close_redis=False)
