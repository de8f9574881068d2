"""Every use of python-socketio's internals, in one place.

rtkit relies on these undocumented parts of python-socketio (verified with
5.12 to 5.18; ``tests/realtime/test_socketio_compat.py`` fails, naming the part,
when a release changes one of them):

* ``AsyncServer._handle_eio_message(eio_sid, data)``, which decodes every
  Socket.IO packet: overridden so that a packet that is not Socket.IO at all
  closes its connection with one line in the log (python-socketio raises, and
  Engine.IO logs a traceback for every such packet);
* ``AsyncServer._handle_event(eio_sid, namespace, id, data)``, which receives
  every event packet: overridden so that a client's packet can never name a
  reserved event (``connect``, ``disconnect``: python-socketio would run the
  connection handlers with the client's arguments) or ``*`` (the catch-all
  handler, with the arguments shifted) nor be malformed (no name, a
  name that is not a string): such packets go to the catch-all handler as an
  unknown event named by their ``repr``;
* ``AsyncServer._handle_event_internal(server, sid, eio_sid, data, namespace, id)``,
  the coroutine that runs a handler and sends its ack: overridden so that a
  handler can tell whether the client asked for an ack (``id`` is not ``None``)
  and can have something done once its ack is sent (:func:`after_ack`);
* ``AsyncServer.manager_initialized`` and ``manager.initialize()``: the
  manager is initialized on ``start()`` instead of on the first connection, so
  an instance hears the others' emits before any client connects;
* ``manager.thread`` (the pub/sub listener task of ``AsyncPubSubManager``) and
  ``manager.redis`` (the Redis client of ``AsyncRedisManager``): stopped and
  closed on ``close()``, which python-socketio does not do;
* ``manager.is_connected(sid, namespace)``: whether the connect handshake is done;
* for connection state recovery (the ``Recovering*`` classes):
  ``AsyncServer._handle_connect`` and ``_handle_disconnect`` (replaced: a
  CONNECT may restore a session and is answered with a ``pid``, a lost
  connection's session is kept), ``_trigger_event``, ``_send_packet``,
  ``_send_eio_packet``, ``environ``, ``handlers``, ``namespaces``; the
  manager's ``rooms`` table, ``pending_connect``, ``basic_enter_room``,
  ``basic_disconnect``, ``get_participants``, ``get_rooms``; the pub/sub
  message dict, ``_handle_emit``, ``channel``, ``json``; and the client's
  ``_handle_connect`` and ``_handle_event`` (its ``pid`` and offsets).

The write path of broadcasts is in ``_engineio_direct.py`` (its docstring lists
what it relies on in python-engineio, python-socketio and uvicorn):
``AckAwareServer`` overrides ``_send_eio_packet`` and ``_send_packet`` to use it,
makes the ASGI driver's websocket its own, and its default manager is
``DirectManager``.

One manager lives elsewhere: ``managers/node_redis.py`` subclasses
``AsyncManager`` and reads its room table (``rooms``, ``get_participants``,
``get_rooms``, ``is_sid_room``); its module docstring lists what it relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import exceptions, packet

from . import _engineio_direct
from ._recovery import is_recoverable
from ._socketio_recovery import (
    Recovering,
    RecoveringClient,
    RecoveringManager,
    RecoveringRedisManager,
    emit_all,
    pid_of,
    recovered_from,
    recovering_store,
)

__all__ = [
    "AckAwareServer",
    "RecoveringClient",
    "RecoveringManager",
    "RecoveringRedisManager",
    "ack_wanted",
    "after_ack",
    "emit_all",
    "initialize_manager",
    "is_connected",
    "pid_of",
    "recovered_from",
    "recovering_store",
    "stop_manager",
]

Action = Callable[[], Awaitable[None]]

log = logging.getLogger("rtkit.realtime")

_ACK_WANTED: contextvars.ContextVar[bool] = contextvars.ContextVar("rtkit_ack", default=False)
_AFTER_ACK: contextvars.ContextVar[list[Action] | None] = contextvars.ContextVar(
    "rtkit_after_ack", default=None
)
_CANCEL_ATTEMPTS = 50  # 0.1 s apart
# Event names a client may not use: the connection handlers' and the catch-all's own.
_NOT_FOR_CLIENTS = frozenset({*socketio.AsyncServer.reserved_events, "*"})


def ack_wanted() -> bool:
    """Whether the client asked for an ack of the event being handled now."""
    return _ACK_WANTED.get()


def after_ack(action: Action) -> None:
    """Run ``action`` once the ack of the event being handled now is sent (or not wanted)."""
    actions = _AFTER_ACK.get()
    if actions is None:
        raise RuntimeError("after_ack() is for event handlers")
    actions.append(action)


class AckAwareServer(socketio.AsyncServer):  # type: ignore[misc]
    """An ``AsyncServer`` whose handlers can tell (:func:`ack_wanted`) whether an ack is
    wanted, and act after it is sent (:func:`after_ack`); a client's event named like a
    reserved event, or malformed, reaches the catch-all handler instead."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("closed a connection that sent a malformed packet (%s)", exc)
            await self.eio.disconnect(eio_sid)

    async def _handle_event(self, eio_sid: str, namespace: str, id: Any, data: Any) -> None:
        if not isinstance(data, list) or not data:
            data = [repr(data)[:80]]
        elif not isinstance(data[0], str) or data[0] in _NOT_FOR_CLIENTS:
            data = [repr(data[0])[:80], *data[1:]]
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        actions: list[Action] = []
        wanted = _ACK_WANTED.set(id is not None)
        after = _AFTER_ACK.set(actions)
        try:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        finally:
            _AFTER_ACK.reset(after)
            _ACK_WANTED.reset(wanted)
        for action in actions:
            await action()

    # ----------------------------------------------------------- the write path

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        # Written at once when nothing is ahead of it (see _engineio_direct).
        if not _engineio_direct.write_now(self.eio, eio_sid, eio_pkt):
            await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        for text in encoded if isinstance(encoded, list) else [encoded]:
            await self._send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, text))

    # ------------------------------------------------- connection state recovery

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.get("client_manager") is None:
            kwargs["client_manager"] = _engineio_direct.DirectManager()
        super().__init__(*args, **kwargs)
        _engineio_direct.install(self.eio)
        # What a kept session remembers of a connection besides its rooms (the app's).
        self.recovery_data: Callable[[str], dict[str, Any]] = lambda sid: {}

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        manager = self.manager
        if not isinstance(manager, Recovering):
            await super()._handle_connect(eio_sid, namespace, data)
            return
        await self._connect_recovering(manager, eio_sid, namespace or "/", data)

    async def _connect_recovering(
        self, manager: Recovering, eio_sid: str, namespace: str, auth: Any
    ) -> None:
        """python-socketio's connect, with a session restored when the client asks, and
        ``pid`` in the CONNECT reply (its client sends it back to recover)."""
        known = (
            namespace in self.handlers
            or namespace in self.namespace_handlers
            or self.namespaces == "*"
            or namespace in self.namespaces
        )
        restored = await manager.restore(eio_sid, namespace, auth) if known else None
        sid = restored.session.sid if restored else None
        if known and sid is None:
            sid = await manager.pre_connect(eio_sid, namespace)
        if sid is None:
            error = self.packet_class(
                packet.CONNECT_ERROR, data="Unable to connect", namespace=namespace
            )
            await self._send_packet(eio_sid, error)
            return
        try:
            refused = await self._refused(sid, eio_sid, namespace, auth)
        except BaseException:
            await manager.disconnect(sid, namespace, ignore_queue=True)  # nothing held
            raise
        if refused is not None:
            await self._send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, refused, namespace=namespace)
            )
            await manager.disconnect(sid, namespace, ignore_queue=True)
            return
        reply = {"sid": sid, "pid": manager.pid_of(sid)}
        await self._send_packet(
            eio_sid, self.packet_class(packet.CONNECT, reply, namespace=namespace)
        )
        await manager.connect(sid, namespace)
        if restored is not None:
            await manager.replay(sid, eio_sid, namespace, restored)

    async def _refused(self, sid: str, eio_sid: str, namespace: str, auth: Any) -> Any:
        """Run the connect handler: None when it accepts, else why it refused."""
        try:
            accepted = await self._trigger_event(
                "connect", namespace, sid, self.environ[eio_sid], auth
            )
        except exceptions.ConnectionRefusedError as exc:
            return exc.error_args
        except ConnectionRefusedError:
            return {"message": "Connection refused by server"}
        return exceptions.ConnectionRefusedError().error_args if accepted is False else None

    async def _handle_disconnect(
        self, eio_sid: str, namespace: str | None, reason: Any = None
    ) -> None:
        manager = self.manager
        session = None
        if isinstance(manager, Recovering) and is_recoverable(reason):
            sid = manager.sid_from_eio_sid(eio_sid, namespace or "/")
            if sid is not None and manager.is_connected(sid, namespace or "/"):
                session = manager.session_of(sid, namespace or "/", self.recovery_data(sid))
        if session is None:
            await super()._handle_disconnect(eio_sid, namespace, reason)
            return
        assert isinstance(manager, Recovering)
        # Kept after the app's disconnect handler, so that a recovery never overtakes it;
        # a recovery here meanwhile waits for it (manager.leaving).
        with manager.leaving(session.pid):
            await super()._handle_disconnect(eio_sid, namespace, reason)
            try:
                await manager.recovery.save(session)
            except Exception:
                log.warning("could not keep the session of %s for recovery", session.sid)


def initialize_manager(sio: socketio.AsyncServer) -> None:
    """Initialize the server's client manager now (python-socketio waits for a connection)."""
    if not sio.manager_initialized:
        sio.manager_initialized = True
        sio.manager.initialize()


async def stop_manager(sio: socketio.AsyncServer, *, close_redis: bool) -> None:
    """Stop the manager's pub/sub listener; close its Redis client when ``close_redis``."""
    manager = sio.manager
    thread = getattr(manager, "thread", None)
    if thread is not None:
        # One cancellation can be lost: Python 3.11's wait_for (inside redis-py)
        # swallows it when the command it waits for finishes at the same moment.
        for _ in range(_CANCEL_ATTEMPTS):
            if thread.done():
                break
            thread.cancel()
            await asyncio.wait({thread}, timeout=0.1)
        if thread.done():
            await asyncio.gather(thread, return_exceptions=True)
    redis_conn = getattr(manager, "redis", None)
    if close_redis and redis_conn is not None:
        with contextlib.suppress(Exception):
            await redis_conn.aclose()


def is_connected(sio: socketio.AsyncServer, sid: str, namespace: str = "/") -> bool:
    """Whether connection ``sid`` finished its handshake (its ``connect`` reached the client)."""
    return bool(sio.manager.is_connected(sid, namespace))
