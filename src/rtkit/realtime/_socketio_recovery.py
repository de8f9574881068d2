"""python-socketio's internals for connection state recovery: part of the compat layer.

Re-exported by ``_socketio_compat`` (import them from there); the internals
they rely on are listed in its docstring and checked by
``tests/realtime/test_socketio_compat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import socketio
from socketio import packet

from ._engineio_direct import DirectEmit, arguments_of, deliver, encode_event
from ._recovery import (
    MemoryRecoveryStore,
    OffsetKey,
    RecoveryStore,
    RedisRecoveryStore,
    Restored,
    Session,
    new_pid,
    offset_key,
    parse_resume,
)
from .managers.classic import ClassicRedisManager

__all__ = [
    "Recovering",
    "RecoveringClient",
    "RecoveringManager",
    "RecoveringRedisManager",
    "emit_all",
    "pid_of",
    "recovered_from",
    "recovering_store",
]

log = logging.getLogger("rtkit.realtime")

# ------------------------------------------------------------ recovery managers

# The host id of recoverable messages on pub/sub: no instance's own, so every
# instance, this one too, delivers them from the channel, in the stream's order.
_EVERY_HOST = "rtkit-recovery"
_LEAVING_WAIT = 10.0  # seconds a recovery waits for its session to be kept here
Encoded = list[Any]  # the Engine.IO packets of one event


async def emit_all(sio: socketio.AsyncServer, emits: list[tuple[str, Any, Any, Any]]) -> None:
    """Emit ``(event, data, to, skip_sid)`` to ``/`` in order (one round trip on Redis)."""
    if isinstance(sio.manager, RecoveringRedisManager):
        await sio.manager.emit_many(emits)
        return
    for event, data, to, skip_sid in emits:
        await sio.emit(event, data, to=to, skip_sid=skip_sid)


def pid_of(sio: socketio.AsyncServer, sid: str) -> str | None:
    """The private session id of connection ``sid`` (None without recovery)."""
    manager = sio.manager
    return manager.pid_of(sid) if isinstance(manager, Recovering) else None


def recovering_store(manager: Any) -> RecoveryStore | None:
    """The recovery store of ``manager`` (None: a manager without recovery)."""
    return manager.recovery if isinstance(manager, Recovering) else None


def recovered_from(sio: socketio.AsyncServer, sid: str) -> Session | None:
    """The session connection ``sid`` was restored from (None: a new session)."""
    manager = sio.manager
    return manager.recovered.get(sid) if isinstance(manager, Recovering) else None


class Recovering(socketio.AsyncManager):  # type: ignore[misc]
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
        self._by_pid: dict[str, str] = {}  # pid -> sid, of this instance's connections
        self._origins: dict[str, str] = {}  # sid -> last offset handled when it connected
        self._sent: dict[str, str] = {}  # sid -> last offset sent to it
        self._held: dict[str, list[tuple[str, Encoded]]] = {}  # sids being restored
        self._floors: dict[str, OffsetKey] = {}  # sid -> offsets up to this were replayed
        self._leaving: dict[str, asyncio.Event] = {}  # pid -> set once its session is kept

    @contextlib.contextmanager
    def leaving(self, pid: str) -> Iterator[None]:
        """While the session ``pid`` is being kept (its app handler runs, then the store)."""
        done = self._leaving[pid] = asyncio.Event()
        try:
            yield
        finally:
            done.set()
            if self._leaving.get(pid) is done:
                del self._leaving[pid]

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
        """Keep and number a recoverable packet (:meth:`_keep`). One sent with
        ``ignore_queue`` (what must reach this instance's connection before the server
        disconnects it), with an ack callback or with binary data goes out as
        python-socketio sends it, without an offset, and is never replayed."""
        arguments = arguments_of(data)
        if kwargs.get("ignore_queue") or not _recoverable(callback, arguments):
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
        await self._keep(namespace or "/", event, arguments, to or room, skip_sid)

    async def _keep(
        self, namespace: str, event: str, arguments: list[Any], room: Any, skip_sid: Any
    ) -> None:
        """Keep a recoverable packet and send it to the connections it is for."""
        raise NotImplementedError

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
            self._pids[sid] = pid = new_pid()
            self._by_pid[pid] = sid
            self._origins[sid] = await self._handled(namespace)
        return sid

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        super().basic_disconnect(sid, namespace, **kwargs)
        pid = self._pids.get(sid)
        if pid is not None and self._by_pid.get(pid) == sid:
            del self._by_pid[pid]
        for table in (self.recovered, self._pids, self._origins, self._sent, self._held):
            table.pop(sid, None)
        self._floors.pop(sid, None)

    def session_of(self, sid: str, namespace: str, data: dict[str, Any]) -> Session | None:
        """The session to keep for connection ``sid`` that is going away."""
        pid, origin = self._pids.get(sid), self._origins.get(sid)
        if pid is None or origin is None:
            return None
        sent = self._sent.get(sid)
        # (a replay may run ahead of this instance's listener: it saw what it was sent)
        seen = max(self._seen.get(namespace, origin), sent or origin, key=offset_key)
        return Session(
            pid=pid,
            sid=sid,
            namespace=namespace,
            rooms=[str(room) for room in self.get_rooms(sid, namespace)],
            origin=origin,
            sent=sent,
            seen=seen,
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
            session = await self._take(pid, namespace)
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
        self._by_pid[pid] = sid
        self.recovered[sid] = session
        wanted = [
            m for m in missed if session.wants(m.message.get("room"), m.message.get("skip_sid"))
        ]
        return Restored(session, missed[-1].offset if missed else base, wanted)

    async def _take(self, pid: str, namespace: str) -> Session | None:
        """The session ``pid``, once this instance kept it: waits for a connection that
        is going, ends one its client left behind (it came back before we noticed)."""
        leaving = self._leaving.get(pid)
        if leaving is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leaving.wait(), _LEAVING_WAIT)
        session = await self.recovery.take(pid)
        old = self._by_pid.get(pid)
        old_eio = None if old is None else self.eio_sid_from_sid(old, namespace)
        if session is None and old_eio is not None:
            # as if its transport had closed (a lost connection): kept, then taken here
            await self.server._handle_disconnect(old_eio, namespace, "transport close")
            await self.server.eio.disconnect(old_eio)
            session = await self.recovery.take(pid)
        return session

    async def replay(self, sid: str, eio_sid: str, namespace: str, restored: Restored) -> None:
        """Send ``sid`` what it missed, then what was held meanwhile, each packet once."""
        floor = offset_key(restored.read)  # every packet up to here was read
        for missed in restored.packets:
            message = missed.message
            await self._send(
                eio_sid, encode_event(self.server, namespace, message["event"], message["data"])
            )
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
        if self.eio_sid_from_sid(sid, namespace) is None:  # gone meanwhile
            self._sent.pop(sid, None)
        else:
            self._floors[sid] = floor  # one still on its way from the channel is not sent again

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
        targets: list[str] = []
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid in skipped:
                continue
            floor = self._floors.get(sid)
            if floor is not None:
                key = key or offset_key(offset)
                if key <= floor:
                    continue
                del self._floors[sid]
            encoded = encoded or encode_event(self.server, namespace, message["event"], data)
            held = self._held.get(sid)
            if held is not None:
                held.append((offset, encoded))
                continue
            self._sent[sid] = offset
            targets.append(eio_sid)
        if encoded is not None and targets:
            await deliver(self.server, targets, encoded)


def _recoverable(callback: Any, arguments: list[Any]) -> bool:
    return callback is None and not packet.Packet.data_is_binary(arguments)


class RecoveringManager(Recovering, DirectEmit):
    """The in-process manager with connection state recovery (memory store)."""

    def __init__(self, store: MemoryRecoveryStore) -> None:
        super().__init__()
        self._init_recovery(store)
        self._append = store.append  # kept and numbered at once: no await before delivery

    async def _keep(
        self, namespace: str, event: str, arguments: list[Any], room: Any, skip_sid: Any
    ) -> None:
        message = {"event": event, "data": arguments, "room": room, "skip_sid": skip_sid}
        self._append(namespace, message)  # no await before delivery: offsets in order
        await self._deliver(namespace, message)


class RecoveringRedisManager(Recovering, ClassicRedisManager):
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

    async def _keep(
        self, namespace: str, event: str, arguments: list[Any], room: Any, skip_sid: Any
    ) -> None:
        parts = self._parts(event, arguments, namespace, room, skip_sid)
        await self._store.publish(namespace, self.channel, [parts])

    async def emit_many(self, emits: list[tuple[str, Any, Any, Any]]) -> None:
        """Emit ``(event, data, to, skip_sid)`` to ``/`` in order, in one round trip."""
        parts = []
        for event, data, to, skip_sid in emits:
            arguments = arguments_of(data)
            if not _recoverable(None, arguments):
                for emit in emits:  # (binary data) one at a time, to keep the order
                    await self.emit(emit[0], emit[1], "/", room=emit[2], skip_sid=emit[3])
                return
            parts.append(self._parts(event, arguments, "/", to, skip_sid))
        await self._store.publish("/", self.channel, parts)

    def _parts(
        self, event: str, arguments: list[Any], namespace: str, room: Any, skip_sid: Any
    ) -> tuple[str, str]:
        """The pub/sub message of an event as the text before and after its offset."""
        message = {
            "method": "emit",
            "event": event,
            "data": [*arguments, json.loads(self._mark)],
            "binary": False,
            "namespace": namespace,
            "room": room,
            "skip_sid": skip_sid,
            "callback": None,
            "host_id": _EVERY_HOST,
        }
        parts = self.json.dumps(message).split(self._mark)
        if len(parts) != 2:  # the mark inside the data itself: never in practice
            raise ValueError("an event argument holds the recovery offset mark")
        return parts[0], parts[1]

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
