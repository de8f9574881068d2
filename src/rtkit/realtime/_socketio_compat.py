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
* ``manager.is_connected(sid, namespace)``: whether the connect handshake is done.

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

__all__ = [
    "AckAwareServer",
    "ack_wanted",
    "after_ack",
    "initialize_manager",
    "is_connected",
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
