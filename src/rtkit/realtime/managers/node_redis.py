"""A python-socketio manager that joins a cluster of Node Socket.IO servers.

The Node servers use ``@socket.io/redis-adapter`` 8.x (protocol of its
``lib/index.ts``; the wire is in ``_node_wire.py``); this manager speaks it on
the same Redis, so Python and Node servers are one cluster:

* an emit on either side reaches the clients of every server: to all, to
  rooms, to one socket (its own room), with ``except``/``skip_sid``;
* the Node side's ``fetchSockets()``, ``allRooms()``, ``socketsJoin()``,
  ``socketsLeave()``, ``disconnectSockets()``, ``serverSideEmit()`` and
  ``timeout().emit()`` with acks see and reach this server's sockets, and
  their twins here (:meth:`NodeRedisManager.fetch_sockets`...) see Node's;
* ``enter_room``/``leave_room``/``disconnect`` of a socket on another server
  are carried out there.

This server counts in the Node servers' ``serverCount()`` (it subscribes to the
request channel), so it answers every request they wait for. Left out: the
sharded adapter, connection state recovery through the adapter (Node's cannot
either), and a socket's credentials in ``fetchSockets()`` (``handshake.auth``,
the ``Authorization``/``Cookie`` headers, which Node would publish on Redis).

python-socketio's own parts this relies on (a manager subclass): ``self.rooms``
(``rooms[namespace][room][sid] = eio_sid``), ``get_participants``,
``get_rooms``, ``server.get_environ`` and ``server.disconnect(ignore_queue=True)``;
``thread`` and ``redis`` are named as in ``AsyncRedisManager`` for
``_socketio_compat.stop_manager``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from ..._core.clock import Clock, SystemClock
from ..._core.redis import make_redis_client
from ..._core.validate import check_int, check_seconds
from ...errors import BackendUnavailable, ConfigurationError, RtkitError
from .._engineio_direct import DirectEmit
from ._node_cluster import MAX_PENDING, ClusterRequests, ServerEventHandler
from ._node_wire import (
    EVENT,
    BroadcastOptions,
    Channels,
    Packet,
    Pending,
    Request,
    RequestType,
    Response,
    RoomNames,
    args_of,
    as_list,
    check_namespaces,
    decode_broadcast,
    decode_request,
    decode_response,
    encode,
    handshake,
    new_uid,
    text,
)

__all__ = ["DEFAULT_KEY", "NodeRedisManager"]

DEFAULT_KEY = "socket.io"
"""The Node adapter's default ``key``: the first part of every channel name."""

log = logging.getLogger("rtkit.realtime")

SocketData = Callable[[str], Any]

_RETRY_FIRST, _RETRY_MAX = 0.5, 30.0  # seconds between two attempts to subscribe again
_POLL = 1.0  # seconds the listener waits for a message before it looks again


class NodeRedisManager(ClusterRequests, DirectEmit):
    """python-socketio's client manager on the protocol of Node's ``@socket.io/redis-adapter``.

    Args:
        url: the Redis the Node servers use (``redis://``, ``rediss://``,
            ``redis+sentinel://``).
        key: the Node adapter's ``key`` option (default ``"socket.io"``).
        namespaces: the Socket.IO namespaces this server shares with the Node
            servers (the adapter works per namespace).
        request_timeout: seconds to wait for the other servers' answers (the
            adapter's ``requestsTimeout``).
        publish_on_specific_response_channel: answer on
            ``<key>-response#<nsp>#<uid>#`` rather than ``<key>-response#<nsp>#``
            (the adapter's option of that name; both reach an 8.x server).
        max_message_bytes: a larger message from Redis is dropped (and logged).
        room_prefix: rtkit's Socket.IO room ``<room_prefix>R`` is the Node
            servers' room ``R``; ``"room:"`` beside the Node.js chat server
            rtkit's protocol comes from, which names a chat room's Socket.IO room
            by the bare room id.
        socket_data: ``socket_data(sid)`` is the ``data`` a Node server sees
            for this server's socket ``sid`` in ``fetchSockets()``.
        clock: the time of a socket's ``handshake.issued``.

    Raises:
        rtkit.errors.ConfigurationError: A bad URL, key, namespace, timeout or size.
    """

    name = "node-redis"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        key: str = DEFAULT_KEY,
        namespaces: Iterable[str] = ("/",),
        request_timeout: float = 5.0,
        publish_on_specific_response_channel: bool = False,
        max_message_bytes: int = 8 * 1024 * 1024,
        room_prefix: str = "",
        socket_data: SocketData | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(key, str) or not key:
            raise ConfigurationError("NodeRedisManager: key must be a non-empty string")
        self.channels = {nsp: Channels(key, nsp) for nsp in check_namespaces(namespaces)}
        self.key = key
        self.uid = new_uid()
        self._own = b"\x93\xa6" + self.uid.encode()  # msgpack of [uid, ...], as encode() writes
        self.request_timeout = check_seconds(request_timeout, "request_timeout")
        self.specific_responses = bool(publish_on_specific_response_channel)
        self.max_message_bytes = check_int(max_message_bytes, "max_message_bytes")
        self.socket_data = socket_data
        if not isinstance(room_prefix, str):
            raise ConfigurationError("NodeRedisManager: room_prefix must be a string")
        self.names = RoomNames(room_prefix)
        self.clock = clock or SystemClock()
        if urlsplit(url).scheme.lower().endswith("+cluster"):
            raise ConfigurationError(
                "NodeRedisManager: the Node adapter's pub/sub needs one Redis or Sentinel, "
                "not a cluster URL"
            )
        self.redis: aioredis.Redis = make_redis_client(url, decode_responses=False)
        self.thread: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._pending: dict[str, Pending] = {}
        self._acks: dict[str, Callable[..., Any]] = {}
        self._issued: dict[str, int] = {}  # sid -> when it connected, in ms
        self._handlers: dict[str, ServerEventHandler] = {}

    # ------------------------------------------------------------ life cycle

    def initialize(self) -> None:
        """Start listening (python-socketio calls this once, with the server set)."""
        super().initialize()
        self.thread = self.server.start_background_task(self._listen)

    async def _listen(self) -> None:
        """Subscribe, then handle every message; subscribe again after a Redis failure."""
        delay = _RETRY_FIRST
        while True:
            pubsub: Any = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(*(c.pattern() for c in self.channels.values()))
                await pubsub.subscribe(*self._request_channels())
                self.subscribed.set()
                delay = _RETRY_FIRST
                while True:
                    message = await pubsub.get_message(timeout=_POLL)
                    if message is not None:
                        await self._dispatch(message)
            except (OSError, aioredis.RedisError) as exc:
                self.subscribed.clear()
                log.warning("node-redis manager: Redis failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _request_channels(self) -> list[str]:
        # (the request channel is what the Node servers count in serverCount())
        return [
            name
            for c in self.channels.values()
            for name in (c.request, c.response, c.response_to(self.uid, True))
        ]

    async def _dispatch(self, message: dict[str, Any]) -> None:
        channel = text(message.get("channel"))
        raw = message.get("data")
        if not isinstance(raw, bytes):
            return
        try:
            if message.get("type") == "pmessage":
                await self._on_broadcast(channel, raw)
            else:
                await self._on_request_channel(channel, raw)
        except RtkitError as exc:
            log.warning("node-redis manager: ignored a message on %s: %s", channel, exc.message)
        except Exception:
            log.exception("node-redis manager: a message on %s failed", channel)

    # ------------------------------------------------------------ broadcasts

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Callable[..., Any] | None = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emit to this server's clients and, through Redis, to every other server's."""
        room = to or room
        namespace = namespace or "/"
        if kwargs.get("ignore_queue") or namespace not in self.channels:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        rooms, skipped = as_list(room), as_list(skip_sid)
        if callback is not None:
            await self._emit_with_ack(event, data, namespace, rooms, callback)
            return
        packet = {"type": EVENT, "data": [event, *args_of(data)], "nsp": namespace}
        theirs = self.names.to_node(rooms)
        options = {"rooms": theirs, "except": self.names.to_node(skipped), "flags": {}}
        channels = self.channels[namespace]
        await self._publish(channels.room_channel(theirs), encode([self.uid, packet, options]))
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid)

    async def _on_broadcast(self, channel: str, raw: bytes) -> None:
        for channels in self.channels.values():
            room = channels.room_of(channel)
            if room is not None:
                break
        else:
            return
        if room and not self._has_room(channels.nsp, room):
            return  # (the adapter's shortcut: no socket here is in that room)
        if raw.startswith(self._own):
            return  # this server's own broadcast, back from Redis: not worth decoding
        uid, packet, options = decode_broadcast(raw, max_bytes=self.max_message_bytes)
        if uid == self.uid or packet is None or packet.nsp != channels.nsp:
            return
        if packet.type == EVENT and packet.data and isinstance(packet.data[0], str):
            await self._emit_here(packet, self.names.local(options))

    async def _emit_here(
        self, packet: Packet, options: BroadcastOptions, ack: Callable[..., Any] | None = None
    ) -> None:
        """Emit ``packet`` to this server's sockets that ``options`` choose (each with its
        own ack id when ``ack`` is given)."""
        event, *args = packet.data
        if ack is None:
            skipped = list(self._sids_in(packet.nsp, options.except_))
            rooms = list(options.rooms) or None
            await super().emit(event, tuple(args), packet.nsp, room=rooms, skip_sid=skipped)
            return
        for sid in self._matching(packet.nsp, options):
            await super().emit(event, tuple(args), packet.nsp, room=sid, callback=ack)

    def _matching(self, nsp: str, options: BroadcastOptions) -> list[str]:
        """This server's sockets in any of the rooms (all: none given), minus the excepted."""
        skipped = self._sids_in(nsp, options.except_)
        rooms: Any = list(options.rooms) or None
        return [sid for sid, _ in self.get_participants(nsp, rooms) if sid not in skipped]

    def _connected(self, nsp: str, options: BroadcastOptions) -> list[str]:
        # (a connection still in its connect handler may yet be refused)
        return [sid for sid in self._matching(nsp, options) if self.is_connected(sid, nsp)]

    def _sids_in(self, nsp: str, rooms: list[Any]) -> set[str]:
        here = self.rooms.get(nsp, {})
        return {sid for room in rooms for sid in here.get(room, ())}

    def _has_room(self, nsp: str, room: str) -> bool:
        rooms = self.rooms.get(nsp, {})
        if any(name in rooms for name in self.names.candidates([room])):
            return True
        with contextlib.suppress(ValueError):
            number = float(room)
            return number in rooms  # (a Node room may be a number)
        return False

    # ------------------------------------------------------------ emits with acks

    async def _emit_with_ack(
        self, event: str, data: Any, nsp: str, rooms: list[Any], callback: Callable[..., Any]
    ) -> None:
        """An emit whose client's ack comes back: here, or through the adapter's BROADCAST."""
        if len(rooms) == 1 and self.is_connected(rooms[0], nsp):
            await super().emit(event, data, nsp, room=rooms[0], callback=callback)
            return
        if len(self._acks) >= MAX_PENDING:
            raise BackendUnavailable("too many acks from other servers awaited at once")
        request_id = new_uid()
        self._acks[request_id] = callback
        asyncio.get_running_loop().call_later(
            self.request_timeout, self._acks.pop, request_id, None
        )
        timeout_ms = int(self.request_timeout * 1000)
        packet = {"type": EVENT, "data": [event, *args_of(data)], "nsp": nsp}
        theirs = self.names.to_node(rooms)
        options = {"rooms": theirs, "except": [], "flags": {"timeout": timeout_ms}}
        request = {"uid": self.uid, "requestId": request_id, "type": RequestType.BROADCAST}
        await self._publish(
            self.channels[nsp].request, encode({**request, "packet": packet, "opts": options})
        )
        local = [sid for sid, _ in self.get_participants(nsp, rooms or None)]
        for sid in local:
            await super().emit(event, data, nsp, room=sid, callback=callback)

    async def _broadcast_with_ack(self, nsp: str, request: Request) -> None:
        """A Node server's ``timeout().emit(..., ack)``: say how many clients, relay their acks."""
        if request.packet is None or request.packet.type != EVENT or not request.packet.data:
            return
        channels, request_id = self.channels[nsp], request.request_id

        async def relay(*args: Any) -> None:
            answer = {"type": RequestType.BROADCAST_ACK, "requestId": request_id}
            answer["packet"] = args[0] if args else None
            await self._answer(channels, request, encode(answer))

        request.packet.nsp = nsp
        count = len(self._matching(nsp, request.opts or BroadcastOptions()))
        counted = {"type": RequestType.BROADCAST_CLIENT_COUNT, "requestId": request_id}
        await self._answer(channels, request, encode({**counted, "clientCount": count}))
        await self._emit_here(request.packet, request.opts or BroadcastOptions(), relay)

    # ------------------------------------------------------------ requests from others

    async def _on_request_channel(self, channel: str, raw: bytes) -> None:
        for channels in self.channels.values():
            if channel == channels.request:
                request = decode_request(raw, max_bytes=self.max_message_bytes)
                await self._on_request(channels, request)
                return
            if channel.startswith(channels.response):
                self._on_response(decode_response(raw, max_bytes=self.max_message_bytes))
                return

    async def _on_request(self, channels: Channels, request: Request) -> None:
        if request.uid == self.uid or request.request_id in self._pending:
            return  # (this server's own request)
        if request.request_id in self._acks:
            return
        nsp = channels.nsp
        if request.opts is not None:
            request.opts = self.names.local(request.opts)
        match request.type:
            case RequestType.SOCKETS:
                rooms = self.names.candidates(request.rooms) or None
                sids = [sid for sid, _ in self.get_participants(nsp, rooms)]
                await self._reply(channels, request, {"sockets": sids})
            case RequestType.ALL_ROOMS:
                rooms = self.names.to_node(self._room_names(nsp))
                await self._reply(channels, request, {"rooms": rooms})
            case RequestType.REMOTE_FETCH:
                options = request.opts or BroadcastOptions()
                found = [self.describe(nsp, sid) for sid in self._connected(nsp, options)]
                await self._reply(channels, request, {"sockets": found})
            case RequestType.REMOTE_JOIN | RequestType.REMOTE_LEAVE | RequestType.REMOTE_DISCONNECT:
                await self._remote_change(channels, request)
            case RequestType.SERVER_SIDE_EMIT:
                await self._server_side_event(channels, request)
            case RequestType.BROADCAST:
                await self._broadcast_with_ack(nsp, request)

    async def _remote_change(self, channels: Channels, request: Request) -> None:
        """socketsJoin / socketsLeave / disconnectSockets (or, without ``opts``, one socket)."""
        nsp = channels.nsp
        if request.opts is not None:
            targets, rooms = self._matching(nsp, request.opts), request.rooms
        elif request.sid is not None and self.is_connected(request.sid, nsp):
            targets, rooms = [request.sid], [] if request.room is None else [request.room]
        else:
            return
        if request.type == RequestType.REMOTE_JOIN:
            rooms = [r if self.is_sid_room(nsp, r) else self.names.joined(r) for r in rooms]
        else:
            rooms = self.names.candidates(rooms)
        for sid in targets:
            await self._change(nsp, sid, request.type, rooms)
        if request.opts is None:
            await self._reply(channels, request, {})

    async def _change(self, nsp: str, sid: str, kind: int, rooms: list[Any]) -> None:
        if kind == RequestType.REMOTE_DISCONNECT:
            await self.server.disconnect(sid, namespace=nsp, ignore_queue=True)
            return
        for room in rooms:
            if kind == RequestType.REMOTE_JOIN and not self.is_sid_room(nsp, room):
                await super().enter_room(sid, nsp, room)
            elif kind == RequestType.REMOTE_LEAVE and room != sid:
                await super().leave_room(sid, nsp, room)

    async def _server_side_event(self, channels: Channels, request: Request) -> None:
        data = request.data or []
        handler = self._handlers.get(data[0]) if data and isinstance(data[0], str) else None
        if handler is None:
            return  # (as a Node server without a listener: no answer)
        result = handler(*data[1:])
        if inspect.isawaitable(result):
            result = await result
        if request.request_id is not None:
            answer = {"type": RequestType.SERVER_SIDE_EMIT, "requestId": request.request_id}
            await self._publish(channels.response, encode({**answer, "data": result}))

    async def _reply(self, channels: Channels, request: Request, body: dict[str, Any]) -> None:
        if request.request_id is not None:
            await self._answer(channels, request, encode({"requestId": request.request_id, **body}))

    async def _answer(self, channels: Channels, request: Request, message: bytes) -> None:
        await self._publish(channels.response_to(request.uid, self.specific_responses), message)

    def _on_response(self, response: Response) -> None:
        pending = self._pending.get(response.request_id)
        if pending is not None:
            pending.add(response)
            return
        callback = self._acks.get(response.request_id)
        if callback is not None and response.type == RequestType.BROADCAST_ACK:
            result = callback(response.packet)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_log_failure)

    # ------------------------------------------------------------ what a Node server sees

    def describe(self, nsp: str, sid: str) -> dict[str, Any]:
        """This server's socket ``sid`` as a Node server's ``fetchSockets()`` shows it."""
        environ = self.server.get_environ(sid, nsp) or {}
        issued = self._issued.get(sid, 0)
        data = self.socket_data(sid) if self.socket_data is not None else None
        return {
            "id": sid,
            "handshake": handshake(environ, issued),
            "rooms": self.names.to_node(self.get_rooms(sid, nsp)),
            "data": data,
        }

    def _room_names(self, nsp: str) -> list[Any]:
        return [room for room in self.rooms.get(nsp, {}) if room is not None]

    async def connect(self, sid: str, namespace: str) -> Any:
        sid = await super().connect(sid, namespace)
        if sid is not None:
            self._issued[sid] = int(self.clock.time() * 1000)
        return sid

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        self._issued.pop(sid, None)
        return await super().disconnect(sid, namespace, **kwargs)

    async def can_disconnect(self, sid: str, namespace: str) -> bool:
        if self.is_connected(sid, namespace) or self.is_pre_connected(sid, namespace):
            return bool(await super().can_disconnect(sid, namespace))
        await self._send_change(namespace, RequestType.REMOTE_DISCONNECT, [sid], [], close=False)
        return False

    async def enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        if self.is_connected(sid, namespace) or self.is_pre_connected(sid, namespace):
            await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        else:
            await self._send_change(namespace, RequestType.REMOTE_JOIN, [sid], [room])

    async def leave_room(self, sid: str, namespace: str, room: Any) -> None:
        if self.is_connected(sid, namespace) or self.is_pre_connected(sid, namespace):
            await super().leave_room(sid, namespace, room)
        else:
            await self._send_change(namespace, RequestType.REMOTE_LEAVE, [sid], [room])

    async def close_room(self, room: Any, namespace: str) -> None:
        await super().close_room(room, namespace)
        await self._send_change(namespace or "/", RequestType.REMOTE_LEAVE, [room], [room])


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("an ack callback failed", exc_info=task.exception())
