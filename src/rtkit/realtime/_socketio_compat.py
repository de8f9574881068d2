"""Every use of python-socketio's internals, in one place.

rtkit relies on these undocumented parts of python-socketio (verified with
5.12 to 5.18; ``tests/realtime/test_socketio_compat.py`` fails, naming the part,
when a release changes one of them):

* ``AsyncServer._handle_event_internal(server, sid, eio_sid, data, namespace, id)``,
  the coroutine that runs a handler and sends its ack: overridden so that a
  handler can tell whether the client asked for an ack (``id`` is not ``None``);
* ``AsyncServer.manager_initialized`` and ``manager.initialize()``: the
  manager is initialized on ``start()`` instead of on the first connection, so
  an instance hears the others' emits before any client connects;
* ``manager.thread`` (the pub/sub listener task of ``AsyncPubSubManager``) and
  ``manager.redis`` (the Redis client of ``AsyncRedisManager``): stopped and
  closed on ``close()``, which python-socketio does not do;
* ``manager.is_connected(sid, namespace)``: whether the connect handshake is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

import socketio

__all__ = ["AckAwareServer", "ack_wanted", "initialize_manager", "is_connected", "stop_manager"]

_ACK_WANTED: contextvars.ContextVar[bool] = contextvars.ContextVar("rtkit_ack", default=False)
_CANCEL_ATTEMPTS = 50  # 0.1 s apart


def ack_wanted() -> bool:
    """Whether the client asked for an ack of the event being handled now."""
    return _ACK_WANTED.get()


class AckAwareServer(socketio.AsyncServer):  # type: ignore[misc]
    """An ``AsyncServer`` whose handlers can tell (:func:`ack_wanted`) whether an ack is wanted."""

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        token = _ACK_WANTED.set(id is not None)
        try:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        finally:
            _ACK_WANTED.reset(token)


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
