"""The direct write path (``realtime/_engineio_direct.py``): what it relies on in
python-engineio / python-socketio still exists, and packets keep their order."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import engineio
import pytest
import socketio
import websockets
from engineio.async_drivers import asgi
from engineio.async_socket import AsyncSocket
from engineio.base_socket import BaseSocket
from realtime_support import serving
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from rtkit.realtime import _engineio_direct as direct
from rtkit.realtime._engineio_direct import DirectManager, DirectWebSocket
from rtkit.realtime._socketio_compat import AckAwareServer, stop_manager

VERSION = getattr(engineio, "__version__", "?")


def _changed(part: str, how: str) -> str:
    return f"python-engineio {VERSION} changed {part}: {how}; update _engineio_direct.py"


def test_the_engineio_parts_it_relies_on() -> None:
    assert asgi._async.get("websocket") is asgi.WebSocket, _changed(
        "async_drivers.asgi._async", "its websocket class is elsewhere"
    )
    upgrade = inspect.getsource(AsyncSocket._upgrade_websocket)
    assert "self._websocket_handler" in upgrade, _changed(
        "AsyncSocket._upgrade_websocket", "it no longer hands its _websocket_handler"
    )
    handler = inspect.getsource(AsyncSocket._websocket_handler)
    assert "await ws.send(pkt.encode())" in handler, _changed(
        "AsyncSocket._websocket_handler", "its writer no longer sends through ws.send"
    )
    poll = inspect.getsource(AsyncSocket.poll)
    assert "task_done()" in poll, _changed("AsyncSocket.poll", "it no longer calls task_done")
    socket = BaseSocket(engineio.AsyncServer(async_mode="asgi"), "sid")
    for name in ("queue", "closed", "closing", "upgraded", "upgrading", "last_ping"):
        assert hasattr(socket, name), _changed("BaseSocket", f"it has no {name}")
    assert isinstance(socket.queue, asyncio.Queue), _changed("the socket queue", "not asyncio")
    assert hasattr(socket.queue, "_unfinished_tasks"), "asyncio.Queue has no _unfinished_tasks"
    assert hasattr(socketio.AsyncServer, "_send_eio_packet"), "python-socketio: no _send_eio_packet"
    params = tuple(inspect.signature(socketio.AsyncManager.emit).parameters)
    expected = ("self", "event", "data", "namespace", "room", "skip_sid", "callback", "to")
    assert params[: len(expected)] == expected, f"AsyncManager.emit takes {params}"


def test_the_uvicorn_and_websockets_parts_it_relies_on() -> None:
    assert direct._SansIO is not None, "uvicorn has no websockets_sansio_impl"
    assert direct._OPEN is not None
    conn = ServerProtocol()
    for name in direct._CONN_PARTS:
        assert hasattr(conn, name), f"websockets' ServerProtocol has no {name}"
    source = inspect.getsource(direct._SansIO.send)
    for name in direct._WIRE_PARTS:
        assert f"self.{name}" in source, f"uvicorn's websocket send no longer uses {name}"


def test_the_server_uses_the_direct_parts() -> None:
    sio = AckAwareServer(async_mode="asgi")
    assert isinstance(sio.manager, DirectManager)
    assert sio.eio._async["websocket"] is DirectWebSocket
    assert asgi._async["websocket"] is asgi.WebSocket  # the driver's own table is untouched


class _Gate:
    """An ASGI send that records what it sends and waits while the gate is shut."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.sent: list[Any] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        await self.open.wait()
        self.sent.append(event["text"] if event["text"] is not None else event["bytes"])


def _websocket(send: Any) -> DirectWebSocket:
    ws = DirectWebSocket(None, None)
    ws.asgi_send = send
    return ws


async def test_a_send_that_waits_keeps_every_later_packet_behind_it() -> None:
    gate = _Gate()
    ws = _websocket(gate)
    ws.write("a")
    assert gate.sent == ["a"] and ws.ready()
    gate.open.clear()
    ws.write("b")  # waits for the transport
    assert not ws.ready()
    writer = asyncio.create_task(ws.send(b"c"))  # the writer's next packet
    await asyncio.sleep(0.01)
    assert gate.sent == ["a"]
    gate.open.set()
    await writer
    assert gate.sent == ["a", "b", b"c"]
    assert ws.ready() and ws.waiting is None


async def test_a_send_that_is_not_a_coroutine_still_goes_out() -> None:
    sent: list[Any] = []

    def send(event: dict[str, Any]) -> asyncio.Future[None]:
        sent.append(event["text"])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    ws = _websocket(send)
    ws.write("a")
    assert not ws.ready()
    await asyncio.sleep(0.01)
    assert sent == ["a"] and ws.ready()


async def test_a_failed_send_leaves_the_rest_to_the_writer() -> None:
    async def broken(event: dict[str, Any]) -> None:
        raise OSError("gone")

    ws = _websocket(broken)
    ws.write("a")
    assert ws.failed and not ws.ready()


async def test_every_packet_arrives_once_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room broadcasts, emits to one, binary data and acks, interleaved."""
    sio = AckAwareServer(async_mode="asgi")
    written: list[bool] = []
    original = direct.write_now

    def counted(*args: Any) -> bool:
        written.append(original(*args))
        return written[-1]

    monkeypatch.setattr(direct, "write_now", counted)

    @sio.on("join")  # type: ignore[misc]
    async def join(sid: str) -> None:
        await sio.enter_room(sid, "r")

    acks: list[Any] = []

    @sio.on("burst")  # type: ignore[misc]
    async def burst(sid: str, count: int) -> str:
        for i in range(count):
            await sio.emit("n", i, room="r")
            await sio.emit("n", {"bin": bytes([i % 256]), "i": i}, to=sid)
        await sio.emit("ask", count, room="r", callback=lambda *answer: acks.append(answer))
        return "done"

    async with serving(socketio.ASGIApp(sio)) as url:
        clients = [socketio.AsyncClient(reconnection=False) for _ in range(3)]
        got: list[list[Any]] = [[] for _ in clients]
        for client, inbox in zip(clients, got, strict=True):
            client.on("n", inbox.append)
            client.on("ask", lambda count: count + 1)
            await client.connect(url, transports=["websocket"], wait_timeout=10)
            await client.call("join", timeout=10)
        try:
            assert await clients[0].call("burst", 200, timeout=30) == "done"
            for index, inbox in enumerate(got[1:], 1):
                await _until(lambda inbox=inbox: len(inbox) >= 200)
                assert got[index] == list(range(200))
            await _until(lambda: len(got[0]) >= 400)
            expected: list[Any] = []
            for i in range(200):
                expected += [i, {"bin": bytes([i % 256]), "i": i}]
            assert got[0] == expected
            await _until(lambda: len(acks) == 3)
            assert acks == [(201,)] * 3
            assert any(written)  # (the direct path was taken)
            wires = [sock.rtkit_ws.wire for sock in sio.eio.sockets.values()]
            assert len(wires) == 3 and all(wire is not None for wire in wires), _changed(
                "uvicorn's websockets-sansio connection", "frames can no longer be written"
            )
        finally:
            for client in clients:
                await client.disconnect()
    await stop_manager(sio, close_redis=False)


async def _until(check: Any) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)


async def test_a_packet_waits_behind_what_the_writer_still_has() -> None:
    gate = _Gate()
    eio = engineio.AsyncServer(async_mode="asgi")
    socket = BaseSocket(eio, "e1")
    socket.upgraded = True
    ws = _websocket(gate)
    socket.rtkit_ws = ws  # type: ignore[attr-defined]
    eio.sockets["e1"] = socket
    pkt = engineio.packet.Packet(engineio.packet.MESSAGE, "x")
    assert direct.write_now(eio, "e1", pkt) and gate.sent == ["4x"]
    socket.queue.put_nowait(pkt)  # queued: the writer's until it calls task_done
    socket.queue.get_nowait()
    assert not direct.write_now(eio, "e1", pkt)
    socket.queue.task_done()
    assert direct.write_now(eio, "e1", pkt)
    socket.upgrading = True
    assert not direct.write_now(eio, "e1", pkt)
    socket.upgrading, socket.closing = False, True
    assert not direct.write_now(eio, "e1", pkt)
    socket.closing, socket.last_ping = False, 1.0  # a ping long unanswered
    assert not direct.write_now(eio, "e1", pkt)
    assert gate.sent == ["4x", "4x"]


async def test_a_compressed_connection_gets_every_packet_in_order() -> None:
    """A client that asks for permessage-deflate (as browsers do): frames cannot be
    written as they are, uvicorn's send compresses them."""
    sio = AckAwareServer(async_mode="asgi")

    @sio.on("burst")  # type: ignore[misc]
    async def burst(sid: str, count: int) -> None:
        await sio.enter_room(sid, "r")
        for i in range(count):
            await sio.emit("n", i, room="r")

    async with serving(socketio.ASGIApp(sio)) as url:
        address = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(address, compression="deflate") as client:
            assert str(await client.recv()).startswith("0{")
            await client.send("40")
            assert str(await client.recv()).startswith("40{")
            await client.send('42["burst",100]')
            got = [await client.recv() for _ in range(100)]
            assert got == [f'42["n",{i}]' for i in range(100)]
            (sock,) = sio.eio.sockets.values()
            assert sock.rtkit_ws.wire.conn.extensions  # (deflate was on)
    await stop_manager(sio, close_redis=False)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_a_frame_is_what_websockets_would_write(size: int) -> None:
    for data in ("é" * (size // 2) + "x" * (size % 2), b"\x01" * size):
        opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
        payload = data.encode() if isinstance(data, str) else data
        assert direct.websocket_frame(data) == Frame(opcode, payload).serialize(mask=False)


class _Sio:
    """Just what deliver() uses of a server: its eio and the usual way of sending."""

    def __init__(self, eio: Any) -> None:
        self.eio = eio

    async def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
        if not direct.write_now(self.eio, eio_sid, pkt):
            await self.eio.send_packet(eio_sid, pkt)


async def test_a_packet_on_its_way_to_the_queue_is_not_overtaken() -> None:
    gate = _Gate()
    eio = engineio.AsyncServer(async_mode="asgi")
    socket = AsyncSocket(eio, "e1")
    socket.upgraded = True
    socket.rtkit_ws = _websocket(gate)  # type: ignore[attr-defined]
    eio.sockets["e1"] = socket
    first, second = (engineio.packet.Packet(engineio.packet.MESSAGE, t) for t in "ab")
    socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.PING))
    socket.queue.get_nowait()  # the writer has it: "a" must wait, in a task
    sending = asyncio.create_task(direct.deliver(_Sio(eio), ["e1"], [first]))
    await asyncio.sleep(0)
    socket.queue.task_done()  # the writer is done before that task ran
    await direct.deliver(_Sio(eio), ["e1"], [second])
    await sending
    assert gate.sent == []
    assert [socket.queue.get_nowait().data for _ in range(2)] == ["a", "b"]
