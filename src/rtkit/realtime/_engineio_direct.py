"""A shorter write path for Engine.IO websocket connections (server CPU per delivery).

python-engineio sends every packet through a per-connection queue and a writer task:
``send`` puts the packet, the writer wakes (a ``wait_for`` and a task per wake-up),
then calls the ASGI ``websocket.send``. In a room broadcast that hop is most of the
Python work per recipient. Here a packet is written at once, in the caller's step,
when nothing is ahead of it on that connection (the queue is empty, every packet put
was taken by the writer and the writer is not in the middle of a send); otherwise it
takes the queue as before, so each connection's packets keep their order. A write
that the ASGI server makes wait (a full transport) goes on in a task, and every later
packet of that connection waits behind it.

Relied on (``tests/realtime/test_socketio_compat.py`` checks it): ``engineio``'s
``AsyncServer._async["websocket"]`` (the class its ASGI driver makes per websocket,
called with the socket's bound ``_websocket_handler``), ``AsyncServer.sockets``, the
socket's ``queue`` (an ``asyncio.Queue``: its ``_unfinished_tasks`` says whether the
writer took every packet put), ``closed``, ``closing``, ``upgraded``, ``upgrading``,
``last_ping``, and that the writer hands each packet to the websocket's ``send``.
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

__all__ = ["DirectEmit", "DirectManager", "DirectWebSocket", "deliver", "install", "write_now"]

log = logging.getLogger("rtkit.realtime")

_ATTRIBUTE = "rtkit_ws"  # where the socket keeps its DirectWebSocket


class DirectWebSocket(asgi.WebSocket):  # type: ignore[misc]
    """python-engineio's ASGI websocket, which its socket can also write to at once."""

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self.socket = getattr(handler, "__self__", None)
        self.sending = 0  # sends under way (the writer's or a direct one that waits)
        self.waiting: asyncio.Future[None] | None = None  # the last direct send that waits
        self.failed = False

    async def __call__(self, environ: dict[str, Any]) -> str:
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
        return not self.sending and not self.failed and self.asgi_send is not None

    def write(self, text: str | bytes) -> None:
        """Send now; a send the ASGI server makes wait goes on in a task, in order."""
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


def write_now(server: Any, eio_sid: str, pkt: Any) -> bool:
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
    ws.write(pkt.encode())
    return True


async def deliver(sio: Any, eio_sids: Iterable[str], encoded: list[Any]) -> None:
    """Send Engine.IO packets ``encoded`` to each of ``eio_sids``: written at once where
    nothing is ahead of them, else (from the first that cannot be) in a task per
    connection, in order; returns once every packet is written or queued."""
    eio = sio.eio
    tasks: list[asyncio.Task[None]] = []
    for eio_sid in eio_sids:
        for index, pkt in enumerate(encoded):
            if not write_now(eio, eio_sid, pkt):
                tasks.append(asyncio.create_task(_send_each(sio, eio_sid, encoded[index:])))
                break
    if tasks:
        await asyncio.wait(tasks)


async def _send_each(sio: Any, eio_sid: str, encoded: list[Any]) -> None:
    for pkt in encoded:
        await sio._send_eio_packet(eio_sid, pkt)


def encode_event(sio: Any, namespace: str, event: str, data: list[Any]) -> list[Any]:
    """The Engine.IO packets of one Socket.IO event (binary data: more than one)."""
    pkt = sio.packet_class(packet.EVENT, namespace=namespace, data=[event, *data])
    encoded = pkt.encode()
    if not isinstance(encoded, list):
        encoded = [encoded]
    return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]


class DirectEmit(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's ``AsyncManager.emit`` without a task per recipient: the
    packet is encoded once and written at once to every connection that can take it
    (:func:`deliver`). An emit with an ack callback (a packet per recipient) goes on
    as python-socketio sends it."""

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
        if callback is not None:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to
            )
            return
        if namespace not in self.rooms:
            return
        # (as python-socketio: a tuple is several arguments, None none)
        arguments = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = encode_event(self.server, namespace, event, arguments)
        targets = [
            eio_sid
            for sid, eio_sid in self.get_participants(namespace, to or room)
            if sid not in skipped
        ]
        await deliver(self.server, targets, encoded)


def install(eio: Any) -> None:
    """Make the Engine.IO server ``eio`` use :class:`DirectWebSocket` (ASGI mode only)."""
    if eio.async_mode == "asgi" and eio._async.get("websocket") is asgi.WebSocket:
        eio._async = {**eio._async, "websocket": DirectWebSocket}


class DirectManager(DirectEmit):
    """The in-process manager (python-socketio's default) with :class:`DirectEmit`."""
