"""A shorter write path for Engine.IO websocket connections (server CPU per delivery).

python-engineio sends every packet through a per-connection queue and a writer task:
``send`` puts the packet, the writer wakes (a ``wait_for`` and a task per wake-up),
then calls the ASGI ``websocket.send``; python-socketio's manager adds a task per
recipient. In a room broadcast that is most of the Python work per recipient. Here
(:class:`DirectEmit`) a broadcast is encoded once, as a websocket frame too, and
written to each connection at once, in the caller's step, when nothing is ahead of
it there (the queue is empty, every packet put was taken by the writer and the
writer is not in the middle of a send); otherwise it takes the queue as before, so
each connection's packets keep their order. The frame goes straight to uvicorn's
transport when the connection is open, writable and uncompressed (else through the
ASGI send). A send that the ASGI server makes wait (a full transport) goes on in a
task, and every later packet of that connection waits behind it.

Relied on (``tests/realtime/test_engineio_direct.py`` checks it): ``engineio``'s
``AsyncServer._async["websocket"]`` (the class its ASGI driver makes per websocket,
called with the socket's bound ``_websocket_handler``), ``AsyncServer.sockets``, the
socket's ``queue`` (an ``asyncio.Queue``: its ``_unfinished_tasks`` says whether the
writer took every packet put), ``closed``, ``closing``, ``upgraded``, ``upgrading``,
``last_ping``, and that the writer hands each packet to the websocket's ``send``;
python-socketio's ``AsyncServer._send_eio_packet`` and ``AsyncManager.emit``'s
arguments; uvicorn's websockets-sansio connection (the ``__self__`` of the ASGI
send: ``_WIRE_PARTS``) and its websockets ``ServerProtocol`` (``_CONN_PARTS``). When
one of uvicorn's is missing, the ASGI send is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from typing import Any

import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi
from socketio import packet

__all__ = [
    "DirectEmit",
    "DirectManager",
    "DirectWebSocket",
    "arguments_of",
    "deliver",
    "encode_event",
    "install",
    "write_now",
]


def arguments_of(data: Any) -> list[Any]:
    """An emit's ``data`` as the event's arguments (as python-socketio: a tuple is
    several, None none)."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


def _sansio() -> tuple[Any, Any]:
    """uvicorn's websockets-sansio connection class and the open state (None, None:
    another uvicorn; the ASGI send is used)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
        from websockets.protocol import State
    except ImportError:
        return None, None
    return WebSocketsSansIOProtocol, State.OPEN


_SansIO, _OPEN = _sansio()
log = logging.getLogger("rtkit.realtime")
# What uvicorn's websockets-sansio connection must have for frames to be written to it.
_WIRE_PARTS = (
    "writable",
    "handshake_complete",
    "disconnected",
    "close_sent",
    "initial_response",
    "conn",
    "transport",
)

# ... and its websockets ServerProtocol.
_CONN_PARTS = ("state", "extensions", "expect_continuation_frame", "writes")
_ATTRIBUTE = "rtkit_ws"  # where the socket keeps its DirectWebSocket


class DirectWebSocket(asgi.WebSocket):  # type: ignore[misc]
    """python-engineio's ASGI websocket, which its socket can also write to at once."""

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self.socket = getattr(handler, "__self__", None)
        self.wire: Any = None  # uvicorn's connection, when frames can be written to it
        self.sending = 0  # sends under way (the writer's or a direct one that waits)
        self.behind = 0  # packets in a task, on their way to the queue
        self.waiting: asyncio.Future[None] | None = None  # the last direct send that waits
        self.failed = False

    async def __call__(self, environ: dict[str, Any]) -> str:
        self.wire = uvicorn_connection(environ.get("asgi.send"))
        if self.socket is not None:
            setattr(self.socket, _ATTRIBUTE, self)
        try:
            result: str = await super().__call__(environ)
            return result
        finally:
            if self.socket is not None and getattr(self.socket, _ATTRIBUTE, None) is self:
                delattr(self.socket, _ATTRIBUTE)

    async def send(self, message: Any) -> None:
        """The writer's send: after any direct send still under way."""
        self.sending += 1
        try:
            if self.waiting is not None:
                await asyncio.shield(self.waiting)
            await super().send(message)
        finally:
            self.sending -= 1

    def ready(self) -> bool:
        """Whether a packet written now would be next on the wire (nothing ahead of it)."""
        idle = not self.sending and not self.behind
        return idle and not self.failed and self.asgi_send is not None

    def write(self, text: str | bytes, frame: bytes | None = None) -> None:
        """Send now; a send the ASGI server makes wait goes on in a task, in order.

        ``frame``: ``text`` as a websocket frame (made once for every recipient of a
        broadcast), written straight to uvicorn's transport when nothing stands in the
        way (the connection is open, writable, without compression)."""
        wire = self.wire
        if wire is not None and _open(wire):
            wire.transport.write(frame or websocket_frame(text))
            return
        if isinstance(text, bytes):
            event = {"type": "websocket.send", "bytes": text, "text": None}
        else:
            event = {"type": "websocket.send", "bytes": None, "text": text}
        coro = self.asgi_send(event)
        if type(coro) is not types.CoroutineType:  # another awaitable: in a task
            self._later(coro)
            return
        try:
            waited = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # the writer stops on an error too: the reader sees it
            self._fail(exc)
            return
        self._later(_Resume(coro, waited))

    def _later(self, rest: Awaitable[Any]) -> None:
        """Finish a send in a task; the connection's next packets wait for it."""
        self.sending += 1
        self.waiting = asyncio.ensure_future(self._finish(rest))

    async def _finish(self, rest: Awaitable[Any]) -> None:
        try:
            await rest
        except Exception as exc:
            self._fail(exc)
        finally:
            self.sending -= 1
            if self.waiting is asyncio.current_task():
                self.waiting = None

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        log.debug("a direct websocket send failed: %r", exc)


class _Resume:
    """Awaitable that goes on with a coroutine suspended outside any task."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waited: Any) -> None:
        self.coro, self.waited = coro, waited

    def __await__(self) -> Generator[Any, Any, None]:
        # Hand each future the coroutine waits for to the running task, then resume the
        # coroutine with what it would have got; its own awaits read the future's result.
        coro, waited = self.coro, self.waited
        while True:
            try:
                yield waited
            except BaseException as exc:  # a cancellation: into the coroutine
                try:
                    waited = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waited = coro.send(None)
            except StopIteration:
                return


def uvicorn_connection(send: Any) -> Any:
    """uvicorn's websocket connection behind the ASGI ``send``, when it is the
    websockets-sansio one (uvicorn's default) with every part used here; else None."""
    wire: Any = getattr(send, "__self__", None)
    if _SansIO is None or type(wire) is not _SansIO:
        return None
    if not all(hasattr(wire, name) for name in _WIRE_PARTS):
        return None
    if not all(hasattr(wire.conn, name) for name in _CONN_PARTS):
        return None
    return wire


def _open(wire: Any) -> bool:
    """Whether a frame written to the transport now is what uvicorn's send would write:
    open, handshake done, not paused, no extension (compression) to apply."""
    conn = wire.conn
    return bool(
        wire.writable.is_set()
        and wire.handshake_complete
        and not wire.disconnected
        and not wire.close_sent
        and wire.initial_response is None
        and conn.state is _OPEN
        and not conn.extensions
        and not conn.expect_continuation_frame
        and not conn.writes
    )


def websocket_frame(data: str | bytes) -> bytes:
    """One unmasked, unfragmented server frame: text for ``str``, binary for ``bytes``."""
    if isinstance(data, str):
        payload, head = data.encode(), 0x81
    else:
        payload, head = data, 0x82
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return bytes((head, 126)) + size.to_bytes(2, "big") + payload
    return bytes((head, 127)) + size.to_bytes(8, "big") + payload


def write_now(server: Any, eio_sid: str, pkt: Any, frame: bytes | None = None) -> bool:
    """Write Engine.IO packet ``pkt`` to connection ``eio_sid`` now if nothing is ahead
    of it there (True); False: send it the usual way."""
    sock = server.sockets.get(eio_sid)
    ws: DirectWebSocket | None = getattr(sock, _ATTRIBUTE, None)
    if ws is None or not ws.ready() or server.logger.isEnabledFor(logging.INFO):
        return False  # (the usual way logs every packet at INFO)
    if sock.closed or sock.closing or not sock.upgraded or sock.upgrading:
        return False
    if getattr(sock.queue, "_unfinished_tasks", 1):  # the writer has packets to send
        return False
    last_ping = sock.last_ping
    if last_ping and time.time() - last_ping > server.ping_timeout:
        return False  # the usual way closes the connection
    ws.write(pkt.encode(), frame)
    return True


async def deliver(sio: Any, eio_sids: Iterable[str], encoded: list[Any]) -> None:
    """Send Engine.IO packets ``encoded`` to each of ``eio_sids``: written at once where
    nothing is ahead of them, else (from the first that cannot be) in a task per
    connection, in order; returns once every packet is written or queued."""
    frames = [websocket_frame(pkt.encode()) for pkt in encoded]  # once for every recipient
    tasks: list[asyncio.Task[None]] = []
    for eio_sid in eio_sids:
        _deliver_one(sio, eio_sid, encoded, frames, tasks)
    if tasks:
        await asyncio.wait(tasks)


def _deliver_one(
    sio: Any, eio_sid: str, encoded: list[Any], frames: list[bytes] | None, tasks: list[Any]
) -> None:
    """Write ``encoded`` to one connection now, or from the first packet that cannot be,
    in a task (added to ``tasks``); until that task has queued them, nothing else is
    written to that connection at once (it would overtake them)."""
    eio = sio.eio
    for index, pkt in enumerate(encoded):
        if not write_now(eio, eio_sid, pkt, frames[index] if frames else None):
            ws = getattr(eio.sockets.get(eio_sid), _ATTRIBUTE, None)
            if ws is not None:
                ws.behind += 1
            tasks.append(asyncio.create_task(_send_rest(sio, eio_sid, encoded[index:], ws)))
            return


async def _send_rest(sio: Any, eio_sid: str, encoded: list[Any], ws: Any) -> None:
    try:
        for pkt in encoded:
            await sio._send_eio_packet(eio_sid, pkt)
    finally:
        if ws is not None:
            ws.behind -= 1


def encode_event(
    sio: Any, namespace: str, event: str, data: list[Any], id: int | None = None
) -> list[Any]:
    """The Engine.IO packets of one Socket.IO event (binary data: more than one)."""
    pkt = sio.packet_class(packet.EVENT, namespace=namespace, data=[event, *data], id=id)
    encoded = pkt.encode()
    if not isinstance(encoded, list):
        encoded = [encoded]
    return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]


class DirectEmit(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's ``AsyncManager.emit`` without a task per recipient: the
    packet is encoded once and written at once to every connection that can take it
    (:func:`deliver`); with an ack callback, a packet per recipient (its ack id)."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if namespace not in self.rooms:
            return
        arguments = arguments_of(data)
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        targets = [
            (sid, eio_sid)
            for sid, eio_sid in self.get_participants(namespace, to or room)
            if sid not in skipped
        ]
        if callback is None:
            encoded = encode_event(self.server, namespace, event, arguments)
            await deliver(self.server, [eio_sid for _, eio_sid in targets], encoded)
            return
        tasks: list[asyncio.Task[None]] = []
        for sid, eio_sid in targets:
            id = self._generate_ack_id(sid, callback)
            encoded = encode_event(self.server, namespace, event, arguments, id)
            _deliver_one(self.server, eio_sid, encoded, None, tasks)
        if tasks:
            await asyncio.wait(tasks)


def install(eio: Any) -> None:
    """Make the Engine.IO server ``eio`` use :class:`DirectWebSocket` (ASGI mode only)."""
    if eio.async_mode == "asgi" and eio._async.get("websocket") is asgi.WebSocket:
        eio._async = {**eio._async, "websocket": DirectWebSocket}


class DirectManager(DirectEmit):
    """The in-process manager (python-socketio's default) with :class:`DirectEmit`."""
