"""The Node adapter's requests a server makes: the cluster seen from this server.

``fetchSockets()``, ``allRooms()``, ``serverSideEmit()``, ``socketsJoin()``,
``socketsLeave()``, ``disconnectSockets()`` and ``serverCount()`` of
``@socket.io/redis-adapter`` 8.x, for
[`NodeRedisManager`][rtkit.realtime.managers.node_redis.NodeRedisManager]
(which answers the same requests from the other servers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError as PydanticError

from ...errors import BackendUnavailable, ConfigurationError, ValidationError
from ._node_wire import (
    BroadcastOptions,
    Channels,
    Pending,
    RequestType,
    RoomNames,
    as_list,
    encode,
    new_uid,
)

__all__ = ["MAX_PENDING", "ClusterRequests", "ServerEventHandler"]

MAX_PENDING = 1_000
"""Requests (and acks) of one server waiting for the others' answers at once."""

ServerEventHandler = Callable[..., Any]


class ClusterRequests:
    """The requests half of the manager (a mixin: the manager has the state)."""

    channels: dict[str, Channels]
    names: RoomNames
    redis: aioredis.Redis
    uid: str
    request_timeout: float
    subscribed: asyncio.Event
    _pending: dict[str, Pending]
    _handlers: dict[str, ServerEventHandler]

    def describe(self, nsp: str, sid: str) -> dict[str, Any]:
        """This server's socket ``sid`` as a Node server's ``fetchSockets()`` shows it."""
        raise NotImplementedError

    def _matching(self, nsp: str, options: BroadcastOptions) -> list[str]:
        raise NotImplementedError

    def _connected(self, nsp: str, options: BroadcastOptions) -> list[str]:
        """The sockets ``_matching`` gives whose connection is complete (as Node lists them)."""
        raise NotImplementedError

    def _room_names(self, nsp: str) -> list[Any]:
        raise NotImplementedError

    async def _change(self, nsp: str, sid: str, kind: int, rooms: list[Any]) -> None:
        raise NotImplementedError

    async def server_count(self, namespace: str = "/") -> int:
        """How many servers (Node and Python) share ``namespace``, as the adapter counts them."""
        channel = self._channels(namespace).request
        await self.wait_subscribed()
        counts = await self.redis.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    async def wait_subscribed(self) -> None:
        """Wait until this server hears the others (and they count it), at most
        ``request_timeout``; python-socketio starts the listener with the server.

        Raises:
            rtkit.errors.BackendUnavailable: Not subscribed in time (Redis is down?).
        """
        try:
            await asyncio.wait_for(self.subscribed.wait(), self.request_timeout)
        except TimeoutError:
            raise BackendUnavailable("not subscribed to the Node adapter's channels") from None

    async def fetch_sockets(
        self, rooms: Iterable[Any] = (), *, except_rooms: Iterable[Any] = (), namespace: str = "/"
    ) -> list[dict[str, Any]]:
        """Every socket of the cluster in any of ``rooms`` (all when empty) and in none of
        ``except_rooms``: ``{id, handshake, rooms, data}`` as Node's ``fetchSockets()``.

        Raises:
            rtkit.errors.BackendUnavailable: Not every server answered within
                ``request_timeout`` (or Redis failed).
        """
        options = _options(rooms, except_rooms)
        here = [self.describe(namespace, sid) for sid in self._connected(namespace, options)]
        opts = {
            "rooms": self.names.to_node(options.rooms),
            "except": self.names.to_node(options.except_),
        }
        there = await self._ask(namespace, RequestType.REMOTE_FETCH, {"opts": opts})
        return here + there

    async def all_rooms(self, namespace: str = "/") -> set[Any]:
        """Every room of the cluster (each socket's own room included), as ``allRooms()``.

        Raises:
            rtkit.errors.BackendUnavailable: Not every server answered in time.
        """
        there = await self._ask(namespace, RequestType.ALL_ROOMS, {})
        return {*self._room_names(namespace), *there}

    def on_server_event(self, event: str, handler: ServerEventHandler) -> None:
        """Run ``handler(*args)`` (sync or async) for another server's
        ``serverSideEmit(event, *args)``; what it returns is the ack, when one is wanted.

        It runs in the manager's listener, which handles one message at a time:
        keep it short (start a task for long work)."""
        self._handlers[event] = handler

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Node's ``serverSideEmit(event, *args)``: to every other server, no ack."""
        body = {"uid": self.uid, "type": RequestType.SERVER_SIDE_EMIT, "data": [event, *args]}
        await self._publish(self._channels(namespace).request, encode(body))

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, namespace: str = "/"
    ) -> list[Any]:
        """``serverSideEmit(event, *args, ack)``: every other server's answer.

        Raises:
            rtkit.errors.BackendUnavailable: Not every server answered in time.
        """
        body = {"data": [event, *args]}
        return await self._ask(namespace, RequestType.SERVER_SIDE_EMIT, body)

    async def add_sockets(
        self, join: Iterable[Any], rooms: Iterable[Any] = (), *, namespace: str = "/"
    ) -> None:
        """``socketsJoin(join)`` of the sockets in ``rooms`` (all when empty), cluster-wide."""
        await self._cluster_change(namespace, RequestType.REMOTE_JOIN, rooms, join)

    async def del_sockets(
        self, leave: Iterable[Any], rooms: Iterable[Any] = (), *, namespace: str = "/"
    ) -> None:
        """``socketsLeave(leave)`` of the sockets in ``rooms`` (all when empty), cluster-wide."""
        await self._cluster_change(namespace, RequestType.REMOTE_LEAVE, rooms, leave)

    async def disconnect_sockets(self, rooms: Iterable[Any] = (), *, namespace: str = "/") -> None:
        """``disconnectSockets()`` of the sockets in ``rooms`` (all when empty), cluster-wide."""
        await self._cluster_change(namespace, RequestType.REMOTE_DISCONNECT, rooms, ())

    async def _cluster_change(
        self, nsp: str, kind: RequestType, rooms: Iterable[Any], change: Iterable[Any]
    ) -> None:
        options, changed = _options(rooms), _options(change)
        self._channels(nsp)  # (refused before anything changes)
        for sid in self._matching(nsp, options):
            await self._change(nsp, sid, kind, changed.rooms)
        await self._send_change(nsp, kind, options.rooms, changed.rooms)

    async def _send_change(
        self, nsp: str, kind: RequestType, rooms: list[Any], change: list[Any], close: bool = False
    ) -> None:
        body: dict[str, Any] = {"uid": self.uid, "type": kind}
        body["opts"] = {"rooms": self.names.to_node(rooms), "except": []}
        theirs = self.names.to_node(change)
        body.update(
            {"close": close} if kind == RequestType.REMOTE_DISCONNECT else {"rooms": theirs}
        )
        await self._publish(self._channels(nsp).request, encode(body))

    async def _ask(self, nsp: str, kind: RequestType, body: dict[str, Any]) -> list[Any]:
        """Publish a request and wait for the answer of every other server."""
        channels = self._channels(nsp)
        expected = await self.server_count(nsp) - 1
        if expected <= 0:
            return []
        if len(self._pending) >= MAX_PENDING:
            raise BackendUnavailable("too many Node adapter requests in flight")
        request_id = new_uid()
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = Pending(kind, expected, done)
        request = {"uid": self.uid, "requestId": request_id, "type": kind, **body}
        try:
            await self._publish(channels.request, encode(request))
            return await asyncio.wait_for(asyncio.shield(done), self.request_timeout)
        except TimeoutError:
            got = self._pending[request_id].answers
            raise BackendUnavailable(
                f"{kind.name}: {got} of {expected} servers answered in {self.request_timeout}s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    def _channels(self, nsp: str) -> Channels:
        try:
            return self.channels[nsp]
        except KeyError:
            raise ConfigurationError(
                f"namespace {nsp!r} is not shared with the Node servers"
            ) from None

    async def _publish(self, channel: str, message: bytes) -> None:
        try:
            await self.redis.publish(channel, message)
        except (OSError, aioredis.RedisError) as exc:
            raise BackendUnavailable(f"could not publish to the Node servers: {exc}") from exc


def _options(rooms: Iterable[Any], except_rooms: Iterable[Any] = ()) -> BroadcastOptions:
    """Rooms as the adapter takes them (a string is one room, not its letters).

    Raises:
        rtkit.errors.ValidationError: A room that is not a string or a number.
    """
    try:
        return BroadcastOptions(rooms=as_list(rooms), except_=as_list(except_rooms))
    except PydanticError as exc:
        raise ValidationError(f"rooms are strings or numbers: {exc.errors()[0]['msg']}") from None
