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
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import exceptions, packet

from ._recovery import (
    MemoryRecoveryStore,
    OffsetKey,
    RecoveryStore,
    RedisRecoveryStore,
    Restored,
    Session,
    arguments_of,
    is_recoverable,
    new_pid,
    offset_key,
    parse_resume,
)

__all__ = [
    "AckAwareServer",
    "RecoveringClient",
    "RecoveringManager",
    "RecoveringRedisManager",
    "ack_wanted",
    "after_ack",
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

    # ------------------------------------------------- connection state recovery

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What a kept session remembers of a connection besides its rooms (the app's).
        self.recovery_data: Callable[[str], dict[str, Any]] = lambda sid: {}

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        manager = self.manager
        if not isinstance(manager, _Recovering):
            await super()._handle_connect(eio_sid, namespace, data)
            return
        await self._connect_recovering(manager, eio_sid, namespace or "/", data)

    async def _connect_recovering(
        self, manager: _Recovering, eio_sid: str, namespace: str, auth: Any
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
        if isinstance(manager, _Recovering) and is_recoverable(reason):
            sid = manager.sid_from_eio_sid(eio_sid, namespace or "/")
            if sid is not None and manager.is_connected(sid, namespace or "/"):
                session = manager.session_of(sid, namespace or "/", self.recovery_data(sid))
        await super()._handle_disconnect(eio_sid, namespace, reason)
        if session is not None:
            # kept after the app's disconnect handler: a recovery never overtakes it
            assert isinstance(manager, _Recovering)
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


# ------------------------------------------------------------ recovery managers

# The host id of recoverable messages on pub/sub: no instance's own, so every
# instance, this one too, delivers them from the channel, in the stream's order.
_EVERY_HOST = "rtkit-recovery"
Encoded = list[Any]  # the Engine.IO packets of one event


def pid_of(sio: socketio.AsyncServer, sid: str) -> str | None:
    """The private session id of connection ``sid`` (None without recovery)."""
    manager = sio.manager
    return manager.pid_of(sid) if isinstance(manager, _Recovering) else None


def recovering_store(manager: Any) -> RecoveryStore | None:
    """The recovery store of ``manager`` (None: a manager without recovery)."""
    return manager.recovery if isinstance(manager, _Recovering) else None


def recovered_from(sio: socketio.AsyncServer, sid: str) -> Session | None:
    """The session connection ``sid`` was restored from (None: a new session)."""
    manager = sio.manager
    return manager.recovered.get(sid) if isinstance(manager, _Recovering) else None


class _Recovering(socketio.AsyncManager):  # type: ignore[misc]
    """What a manager adds for connection state recovery.

    Every recoverable packet (an event without ack callback and without binary
    data) gets an offset, its last argument, as Socket.IO's Node server does;
    each connection has a private session id; a connection that reconnects with
    its pid gets its id and rooms back and the packets it missed. While a
    session is being restored its live packets are held, then sent after the
    replay, each packet once (offsets only grow).
    """

    recovery: RecoveryStore

    def _init_recovery(self, store: RecoveryStore) -> None:
        self.recovery = store
        self.recovered: dict[str, Session] = {}  # sid -> the session it was restored from
        self._seen: dict[str, str] = {}  # namespace -> last offset handled here
        self._pids: dict[str, str] = {}
        self._origins: dict[str, str] = {}  # sid -> last offset handled when it connected
        self._sent: dict[str, str] = {}  # sid -> last offset sent to it
        self._held: dict[str, list[tuple[str, Encoded]]] = {}  # sids being restored
        self._floors: dict[str, OffsetKey] = {}  # sid -> offsets up to this were replayed

    def pid_of(self, sid: str) -> str | None:
        return self._pids.get(sid)

    async def _handled(self, namespace: str) -> str:
        seen = self._seen.get(namespace)
        if seen is None:
            seen = self._seen[namespace] = await self.recovery.head(namespace)
        return seen

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        sid: str | None = await super().pre_connect(eio_sid, namespace)
        if sid is not None:
            self._pids[sid] = new_pid()
            self._origins[sid] = await self._handled(namespace)
        return sid

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        super().basic_disconnect(sid, namespace, **kwargs)
        for table in (self.recovered, self._pids, self._origins, self._sent, self._held):
            table.pop(sid, None)
        self._floors.pop(sid, None)

    def session_of(self, sid: str, namespace: str, data: dict[str, Any]) -> Session | None:
        """The session to keep for connection ``sid`` that is going away."""
        pid, origin = self._pids.get(sid), self._origins.get(sid)
        if pid is None or origin is None:
            return None
        return Session(
            pid=pid,
            sid=sid,
            namespace=namespace,
            rooms=[str(room) for room in self.get_rooms(sid, namespace)],
            origin=origin,
            sent=self._sent.get(sid),
            seen=self._seen.get(namespace, origin),
            data=data,
            expires_at=self.recovery.clock.time() + self.recovery.duration,
        )

    async def restore(self, eio_sid: str, namespace: str, auth: Any) -> Restored | None:
        """Restore the session the CONNECT ``auth`` names: its sid pre-connected, in its
        rooms, its live packets held; None when there is none to restore."""
        asked = parse_resume(auth)
        if asked is None or self.sid_from_eio_sid(eio_sid, namespace) is not None:
            return None
        pid, offset = asked
        try:
            session = await self.recovery.take(pid)
        except Exception as exc:  # the store is down: a new session, as for an unknown pid
            log.warning("could not look up a session to recover: %s", exc)
            return None
        if session is None or session.namespace != namespace:
            return None
        sid = session.sid
        if self.eio_sid_from_sid(sid, namespace) is not None:
            return None  # that sid is connected (a stale or copied pid)
        # Hold first, then read: a packet kept meanwhile is read, held, or both (sent once).
        self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        self._held[sid] = []
        for room in session.rooms:
            if room != sid:
                self.basic_enter_room(sid, namespace, room)
        base = session.base(offset)
        try:
            missed = await self.recovery.missed(namespace, base)
        except Exception as exc:
            log.warning("could not read the packets a session missed: %s", exc)
            missed = None
        if missed is None:
            self.basic_disconnect(sid, namespace)
            return None
        self._pids[sid], self._origins[sid] = pid, base
        self.recovered[sid] = session
        wanted = [
            m for m in missed if session.wants(m.message.get("room"), m.message.get("skip_sid"))
        ]
        return Restored(session, base, wanted)

    async def replay(self, sid: str, eio_sid: str, namespace: str, restored: Restored) -> None:
        """Send ``sid`` what it missed, then what was held meanwhile, each packet once."""
        floor = offset_key(restored.base)
        for missed in restored.packets:
            message = missed.message
            await self._send(eio_sid, self._encode(namespace, message["event"], message["data"]))
            floor = offset_key(missed.offset)
            self._sent[sid] = missed.offset
        held = self._held.get(sid, [])
        while held:  # packets held while this runs join the end of the list
            offset, encoded = held.pop(0)
            if offset_key(offset) > floor:
                await self._send(eio_sid, encoded)
                floor = offset_key(offset)
                self._sent[sid] = offset
        self._held.pop(sid, None)
        self._floors[sid] = floor  # one still on its way from the channel is not sent again

    def _encode(self, namespace: str, event: str, data: list[Any]) -> Encoded:
        pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *data])
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]

    async def _send(self, eio_sid: str, encoded: Encoded) -> None:
        with contextlib.suppress(KeyError):  # the connection went away meanwhile
            for p in encoded:
                await self.server._send_eio_packet(eio_sid, p)

    async def _deliver(self, namespace: str, message: dict[str, Any]) -> None:
        """Send a recoverable packet (``data`` ends with its offset) to this instance's
        connections it is for: held for one being restored, dropped for one that got it."""
        data = message["data"]
        offset = data[-1]
        self._seen[namespace] = offset
        if namespace not in self.rooms:
            return
        skip = message.get("skip_sid")
        skipped = skip if isinstance(skip, list) else [skip]
        encoded: Encoded | None = None
        key: OffsetKey | None = None
        tasks: list[asyncio.Task[None]] = []
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid in skipped:
                continue
            floor = self._floors.get(sid)
            if floor is not None:
                key = key or offset_key(offset)
                if key <= floor:
                    continue
                del self._floors[sid]
            encoded = encoded or self._encode(namespace, message["event"], data)
            held = self._held.get(sid)
            if held is not None:
                held.append((offset, encoded))
                continue
            self._sent[sid] = offset
            tasks.extend(
                asyncio.create_task(self.server._send_eio_packet(eio_sid, p)) for p in encoded
            )
        if tasks:
            await asyncio.wait(tasks)


def _recoverable(callback: Any, arguments: list[Any]) -> bool:
    return callback is None and not packet.Packet.data_is_binary(arguments)


class RecoveringManager(_Recovering):
    """The in-process manager with connection state recovery (memory store)."""

    def __init__(self, store: MemoryRecoveryStore) -> None:
        super().__init__()
        self._init_recovery(store)
        self._append = store.append  # kept and numbered at once: no await before delivery

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
        arguments = arguments_of(data)
        if not _recoverable(callback, arguments):
            await super().emit(
                event,
                data,
                namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
            return
        namespace = namespace or "/"
        message = {"event": event, "data": arguments, "room": to or room, "skip_sid": skip_sid}
        self._append(namespace, message)  # no await before delivery: offsets in order
        await self._deliver(namespace, message)


class RecoveringRedisManager(_Recovering, socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager with connection state recovery.

    A recoverable packet is kept in the namespace's stream and published in one
    script (:class:`RedisRecoveryStore`); every instance, this one too, sends it
    to its connections when it arrives on the channel, so all of them send
    packets in the stream's order. An emit with ``ignore_queue`` is sent at once
    to this instance's connections, without an offset, and never replayed (for
    what must arrive before a disconnect the server makes).
    """

    def __init__(self, url: str, *, channel: str, store: RedisRecoveryStore) -> None:
        super().__init__(url, channel=channel)
        self._init_recovery(store)
        self._store = store
        self._mark = json.dumps("rtkit-offset-" + uuid.uuid4().hex)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        arguments = arguments_of(data)
        if kwargs.get("ignore_queue") or not _recoverable(callback, arguments):
            await super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
            return
        namespace = namespace or "/"
        message = {
            "method": "emit",
            "event": event,
            "data": [*arguments, json.loads(self._mark)],
            "binary": False,
            "namespace": namespace,
            "room": to or room,
            "skip_sid": skip_sid,
            "callback": None,
            "host_id": _EVERY_HOST,
        }
        parts = self.json.dumps(message).split(self._mark)
        if len(parts) != 2:  # the mark inside the data itself: never in practice
            raise ValueError("an event argument holds the recovery offset mark")
        await self._store.publish(namespace, self.channel, parts[0], parts[1])

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("host_id") != _EVERY_HOST:
            await super()._handle_emit(message)
            return
        await self._deliver(message.get("namespace") or "/", message)


class RecoveringClient(socketio.AsyncClient):  # type: ignore[misc]
    """An ``AsyncClient`` that recovers its session as Socket.IO's own client does.

    It keeps the ``pid`` of the server's CONNECT reply and the offset of the last
    event received (its last argument, a string, when the server sent a pid),
    and sends both back in the ``auth`` of the next connection
    (:meth:`resume_auth`); ``recovered`` tells whether that connection got the
    session back. Handlers receive the offset as an extra last argument, as in
    Node.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid: str | None = None
        self.offset: str | None = None
        self.recovered = False

    def resume_auth(self, auth: dict[str, Any]) -> dict[str, Any]:
        """``auth`` with the session to recover, when there is one."""
        if self.pid is None:
            return auth
        extra = (
            {"pid": self.pid} if self.offset is None else {"pid": self.pid, "offset": self.offset}
        )
        return {**auth, **extra}

    async def _handle_connect(self, namespace: str | None, data: Any) -> None:
        pid = data.get("pid") if isinstance(data, dict) else None
        pid = pid if isinstance(pid, str) else None
        self.recovered = pid is not None and pid == self.pid
        if not self.recovered:
            self.offset = None
        self.pid = pid
        await super()._handle_connect(namespace, data)

    async def _handle_event(self, namespace: str | None, id: Any, data: Any) -> None:
        last = data[-1] if isinstance(data, list) and len(data) > 1 else None
        if self.pid is not None and isinstance(last, str):
            self.offset = last
        await super()._handle_event(namespace, id, data)
