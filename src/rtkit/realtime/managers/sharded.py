"""A python-socketio manager on Redis 7 sharded pub/sub: each instance hears only its rooms.

python-socketio's ``AsyncRedisManager`` publishes every emit on one channel that
every instance reads: with N instances each one receives the traffic of all N.
This manager publishes with ``SPUBLISH`` on a shard channel per room and
``SSUBSCRIBE``\\ s an instance to a room's channel only while it has connections
in that room, so Redis hands a room's message only to the instances that have
members there. On a Redis Cluster a shard channel lives on the master of its
slot (like a key), so the rooms spread over the masters too.

Channels (``<scope>`` is ``<prefix>socketio`` on a cluster and
``<prefix>socketio:db<N>`` elsewhere, since pub/sub ignores database numbers):

* ``{<scope>:<namespace>#<room>}:room``: emits to the room, ``close_room``;
  every connection's own room (its sid) is a room too, so an emit, a
  ``disconnect`` or an ``enter_room`` / ``leave_room`` aimed at a connection
  of another instance reaches that instance alone;
* ``{<scope>:<host id>}:host``: callbacks (acks) coming back to their sender;
* ``{<scope>}:all``: emits to everyone, and emits to a list of rooms (so that
  a connection in two of them gets the message once).

One channel per room rather than per room bucket: a bucket shared by rooms
would deliver to an instance the traffic of every room that hashes with one of
its own, which is what this manager exists to avoid; a shard channel is an
entry in one node's table, so Redis pays for a subscription, not for a room.

An ``enter_room`` (and a connect) returns once Redis confirmed the new
subscription (bounded by ``timeout``), so a message sent to the room right after
the join reaches the new member. The subscriptions are read by one connection
per node (:class:`~rtkit.eventbus.backends._subscription.SubscriptionConnection`,
the event bus's, watched with ``PING``); when one fails the manager drops them
all, re-reads the cluster's slot map and subscribes again to every room it has
members in, retrying with a capped back-off: after a failover it finds the
promoted replica by itself. Messages published while it is not subscribed are
lost (pub/sub keeps nothing), as with the classic manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

from redis.crc import key_slot
from socketio.async_pubsub_manager import AsyncPubSubManager

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, database_of, is_cluster, refresh_topology
from ..._core.wire import new_connection, new_node_connection
from ...eventbus.backends._subscription import SubscriptionConnection
from .._engineio_direct import DirectEmit

__all__ = ["ShardedRedisManager"]

log = logging.getLogger("rtkit.realtime")

_MAX_RECONNECT_DELAY = 2.0
_SINGLE = "single"  # the node name of the one connection on a non-cluster Redis


class ShardedRedisManager(AsyncPubSubManager, DirectEmit):  # type: ignore[misc]
    """Socket.IO emits between instances on per-room shard channels (see the module docs).

    Args:
        redis: The Redis client to publish with (borrowed: never closed here); a
            ``RedisCluster``, or a single Redis 7 or Sentinel-followed master.
        prefix: The deployment's key prefix (channels are named under it).
        timeout: Bound, in seconds, on subscribing and on waiting for a new
            subscription's confirmation.
        ping_interval: Idle seconds before a subscription connection is PINGed.
        ping_timeout: Seconds to wait for the PING's answer before subscribing again.
        write_only: Only publish (an emitter outside any server).
    """

    name = "rtkit-sharded"

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        write_only: bool = False,
        logger: Any = None,
    ) -> None:
        self.cluster = is_cluster(redis)
        component = "socketio" if self.cluster else f"socketio:db{database_of(redis)}"
        self._keys = Keyspace(prefix, component)
        self.all_channel = self._keys.shared_key("all")
        super().__init__(channel=self.all_channel, write_only=write_only, logger=logger)
        self._client = redis
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._wanted = True  # (the subscription connections' idle check asks)
        self.reconnects = 0
        self.received = 0
        """Messages this instance read from Redis (for tests and benchmarks)."""
        self.host_channel = self._keys.entity_key(self.host_id, "host")
        self._rooms: set[str] = set()  # channels of the rooms with members here
        self._live: set[str] = set()  # channels Redis confirmed on the open connections
        self._requested: set[str] = set()  # channels asked for on the open connections
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._readers: dict[str, SubscriptionConnection] = {}
        self._changed = asyncio.Event()
        self._touched: set[str] = set()  # room channels wanted or unwanted since last looked
        self._mapped = not self.cluster  # the cluster client read the slot map

    # ------------------------------------------------------------ channel names

    def room_channel(self, room: Any, namespace: str = "/") -> str:
        """The shard channel of ``room`` (a sid: that connection's own room)."""
        return self._keys.entity_key(f"{namespace}#{room}", "room")

    def wanted(self) -> set[str]:
        """Every channel this instance should be subscribed to now."""
        fixed = set() if self.write_only else {self.all_channel, self.host_channel}
        return fixed | self._rooms

    def _route(self, message: dict[str, Any]) -> str | None:
        """The channel a message to the other instances goes on (``None``: nobody else)."""
        method = message["method"]
        namespace = message.get("namespace") or "/"
        if method == "callback":
            return self._keys.entity_key(str(message["host_id"]), "host")
        if method in ("disconnect", "enter_room", "leave_room"):
            return self.room_channel(message["sid"], namespace)
        room = message.get("room")
        if method == "emit" and (room is None or isinstance(room, list | tuple)):
            return self.all_channel
        if method == "emit" and self.is_sid_room(namespace, room):
            return None  # a connection of this instance: already handled here
        return self.room_channel(room, namespace)

    # ------------------------------------------------------------ membership

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None:
            channel = self.room_channel(room, namespace)
            if channel not in self._rooms:
                self._rooms.add(channel)
                self._touch(channel)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        if room is not None and room not in self.rooms.get(namespace, {}):
            channel = self.room_channel(room, namespace)
            if channel in self._rooms:
                self._rooms.discard(channel)
                self._touch(channel)
                self._release(channel)

    def _touch(self, channel: str) -> None:
        self._touched.add(channel)
        self._changed.set()

    async def connect(self, sid: str, namespace: str) -> Any:
        found = await super().connect(sid, namespace)
        if found is not None:  # (the connection's own room: emits aimed at it)
            await self._settle(self.room_channel(found, namespace))
        return found

    async def enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        await self._settle(self.room_channel(room, namespace))

    async def _handle_enter_room(self, message: dict[str, Any]) -> None:
        await super()._handle_enter_room(message)
        await self._settle(self.room_channel(message.get("room"), message.get("namespace") or "/"))

    async def _settle(self, channel: str) -> None:
        """Wait (up to ``timeout``) until Redis confirmed the subscription to ``channel``
        (while subscribing again, or at start, too: the new subscriptions include it)."""
        if getattr(self, "thread", None) is None or channel in self._live:
            return  # (not listening: write-only, or never initialized)
        if channel not in self._rooms:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiters.setdefault(channel, loop.create_future())
        _, late = await asyncio.wait([waiter], timeout=self._timeout)
        if late:
            log.warning("Redis did not confirm a room subscription within %g s", self._timeout)

    def _release(self, channel: str) -> None:
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ publishing

    async def _publish(self, data: dict[str, Any]) -> None:
        """``SPUBLISH`` on the message's channel; once more after re-reading the slot map."""
        channel = self._route(data)
        if channel is None:
            return
        payload = self.json.dumps(data)
        for attempt in range(2):
            try:
                await self._map()
                await self._client.execute_command("SPUBLISH", channel, payload)
                return
            except Exception as exc:
                if attempt:
                    log.error("could not publish a Socket.IO message to Redis (%s)", exc)
                    return
                await refresh_topology(self._client)

    async def _map(self) -> None:
        """Have a cluster client read the slot map, once (it routes by it; a client
        that other parts already use has done so)."""
        if not self._mapped:
            async with asyncio.timeout(self._timeout):
                await self._client.initialize()
            self._mapped = True

    # ------------------------------------------------------------ receiving

    def confirmed(self, channel: str) -> None:
        """Redis confirmed a subscription to ``channel`` (called by the connections)."""
        self._live.add(channel)
        self._release(channel)

    async def receive(self, raw: bytes | str) -> None:
        """One message from a channel: carry it out unless this instance sent it."""
        self.received += 1
        try:
            data = self.json.loads(raw)
            method = data["method"]
            if method == "callback":
                await self._handle_callback(data)
            elif data.get("host_id") != self.host_id:
                await self._dispatch(method, data)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not handle a Socket.IO message from Redis")

    async def _dispatch(self, method: str, data: dict[str, Any]) -> None:
        handlers = {
            "emit": self._handle_emit,
            "disconnect": self._handle_disconnect,
            "enter_room": self._handle_enter_room,
            "leave_room": self._handle_leave_room,
            "close_room": self._handle_close_room,
        }
        handler = handlers.get(method)
        if handler is not None:
            await handler(data)

    async def _thread(self) -> None:
        """Subscribe to every wanted channel and read; on a failure, again (backing off)."""
        delay = 0.05
        while True:
            try:
                await self._map()
                self._touched.clear()
                await self._open(self.wanted())
                if delay > 0.05:
                    self.reconnects += 1
                delay = 0.05
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Socket.IO subscriptions lost (%s), subscribing again", exc)
                delay = min(delay * 2, _MAX_RECONNECT_DELAY)
            finally:
                await self._close_readers()
            await refresh_topology(self._client)
            await asyncio.sleep(delay)

    def _node_of(self, channel: str) -> Any:
        if not self.cluster:
            return None
        return self._client.nodes_manager.get_node_from_slot(key_slot(channel.encode()))

    async def _open(self, channels: Collection[str]) -> None:
        """Subscribe to ``channels``: on the running connection of their node, or a new one."""
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for channel in channels:
            node = self._node_of(channel)
            name = _SINGLE if node is None else node.name
            by_node.setdefault(name, (node, []))[1].append(channel)
        self._requested |= set(channels)
        async with asyncio.timeout(self._timeout):
            for name, (node, mine) in by_node.items():
                reader = self._readers.get(name)
                if reader is not None:
                    await reader.add(mine)
                    continue
                conn = new_connection(self._client) if node is None else new_node_connection(node)
                reader = self._readers[name] = SubscriptionConnection(self, conn, sharded=True)
                await reader.open(mine)

    async def _drop(self, channels: Collection[str]) -> None:
        for channel in channels:
            self._requested.discard(channel)
            self._live.discard(channel)
            node = self._node_of(channel)
            reader = self._readers.get(_SINGLE if node is None else node.name)
            if reader is not None:
                await reader.remove([channel])

    async def _run(self) -> None:
        """Read every connection; follow membership changes; raise the first failure."""
        running: dict[str, asyncio.Task[None]] = {}
        changed: asyncio.Task[Any] | None = None
        try:
            while True:
                for name, reader in self._readers.items():
                    if name not in running:
                        running[name] = asyncio.ensure_future(reader.run())
                if changed is None:
                    changed = asyncio.ensure_future(self._changed.wait())
                done, _ = await asyncio.wait(
                    [*running.values(), changed], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is not changed:
                        task.result()  # a reader's failure
                        raise ConnectionError("a subscription connection stopped")
                if changed in done:
                    changed = None
                    self._changed.clear()
                    touched, self._touched = self._touched, set()
                    await self._drop({c for c in touched if c not in self._rooms} & self._requested)
                    await self._open({c for c in touched if c in self._rooms} - self._requested)
        finally:
            tasks = [*running.values(), *([changed] if changed is not None else [])]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _close_readers(self) -> None:
        readers, self._readers = self._readers, {}
        self._live, self._requested = set(), set()
        for reader in readers.values():
            await reader.close()
