"""A subscription connection of the Redis EventBus backend: subscribe, read, watch for silence.

Classic (``SUBSCRIBE``, one channel, one Redis or the Sentinel-followed master)
or sharded (``SSUBSCRIBE``, the shard channels one cluster node owns, more added,
or some left, while it runs: the Socket.IO sharded manager uses it too). One task
reads the connection in a blocking loop that handles every message a read brought in.
When the connection is idle for ``ping_interval`` seconds it sends ``PING``; if
nothing comes back within ``ping_timeout`` seconds (a silently dead connection) the
connection is dropped, and its owner subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any, Protocol

from redis.asyncio.connection import AbstractConnection

from ..._core.redis import redis_unavailable
from ..._core.wire import PUSH, bare_streams

__all__ = ["DeadSubscription", "Listener", "SubscriptionConnection"]

_WATCHDOG_PING = b"rtkit-eventbus-watchdog"


class DeadSubscription(Exception):
    """The subscription connection stopped answering PING."""


class Listener(Protocol):
    """What a subscription connection reports to (the backend)."""

    _timeout: float
    _ping_interval: float
    _ping_timeout: float
    _wanted: bool
    reconnects: int

    async def receive(self, raw: bytes | str) -> None:
        """One message from a channel."""
        ...

    def confirmed(self, channel: str) -> None:
        """Redis confirmed a sharded subscription to ``channel``."""
        ...


class SubscriptionConnection:
    """One subscription connection (see the module docs)."""

    def __init__(self, owner: Listener, conn: AbstractConnection, *, sharded: bool) -> None:
        self.owner = owner
        self.conn = conn
        self.sharded = sharded
        self.loop = asyncio.get_running_loop()
        self.heard = self.loop.time()
        self.pinged: float | None = None
        self.busy = False  # handlers are running: silence on the socket means nothing
        self.dead: str | None = None
        self.stopping = False
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.leaving: dict[str, int] = {}  # shard channels we SUNSUBSCRIBEd, not yet confirmed

    async def open(self, channels: Collection[str]) -> None:
        """Connect and subscribe to ``channels``, every one confirmed within ``timeout``."""
        command = "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"
        expected = "ssubscribe" if self.sharded else "subscribe"
        waiting = set(channels)
        with redis_unavailable("subscribing to events"):
            async with asyncio.timeout(self.owner._timeout):
                await self.conn.connect()  # type: ignore[no-untyped-call]
                await self._send(command, channels)
                while waiting:
                    reply = await self.conn.read_response()
                    if isinstance(reply, list) and _text(reply[0]) == expected:
                        waiting.discard(_text(reply[1]))
                        if self.sharded:
                            self.owner.confirmed(_text(reply[1]))

    async def add(self, channels: Collection[str]) -> None:
        """Subscribe to more shard channels on this connection (confirmed as they come)."""
        await self._send("SSUBSCRIBE", channels)

    async def remove(self, channels: Collection[str]) -> None:
        """Leave shard channels on this connection (their ``sunsubscribe`` is then expected)."""
        for channel in channels:
            self.leaving[channel] = self.leaving.get(channel, 0) + 1
        await self._send("SUNSUBSCRIBE", channels)

    async def _send(self, command: str, channels: Collection[str]) -> None:
        """One command per channel, pipelined (the channels of one SSUBSCRIBE must share
        a slot: these are on one node, not in one slot)."""
        packed = [self.conn.pack_command(command, channel) for channel in channels]
        await self.conn.send_packed_command([part for p in packed for part in p])

    async def run(self) -> None:
        """Deliver messages until the connection fails, falls silent, or is not wanted."""
        self.heard = self.loop.time()
        self.timer = self.loop.call_at(self.heard + self.owner._ping_interval, self._watch)
        wire = bare_streams(self.conn)
        while True:
            self.busy = False
            try:
                replies = await self._read(wire)
            except Exception:
                if self.dead is not None:
                    raise DeadSubscription(self.dead) from None
                if self.stopping:
                    return
                raise
            self.heard = self.loop.time()
            self.pinged = None
            self.busy = True
            for reply in replies:
                await self._handle(reply)

    async def _read(self, wire: Any) -> list[Any]:
        """Wait for data; return every complete reply it brought (hiredis), or one."""
        if wire is None:
            return [await self.conn.read_response()]
        reader, _, parser = wire
        out: list[Any] = []
        while not out:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("Redis closed the subscription connection")
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                out.append(reply)
                reply = parser.gets()
        return out

    async def _handle(self, reply: Any) -> None:
        if isinstance(reply, Exception):  # an SSUBSCRIBE refused (the slot moved)
            raise ConnectionError(f"Redis refused a subscription: {reply}")
        if not isinstance(reply, list | PUSH) or not reply:
            return  # a RESP3 PONG
        kind = _text(reply[0])
        if kind == "message" or kind == "smessage":
            await self.owner.receive(reply[2])
        elif kind == "ssubscribe":
            self.owner.confirmed(_text(reply[1]))
        elif kind == "sunsubscribe":
            self._left(_text(reply[1]))
        elif kind == "subscribe":  # subscribed again on the same connection
            self.owner.reconnects += 1

    def _left(self, channel: str) -> None:
        """A ``sunsubscribe``: ours (:meth:`remove`), or the node gave the slot away."""
        asked = self.leaving.get(channel, 0)
        if not asked:  # subscribe elsewhere
            raise ConnectionError(f"Redis Cluster moved shard channel {channel}")
        if asked == 1:
            del self.leaving[channel]
        else:
            self.leaving[channel] = asked - 1

    def _watch(self) -> None:
        """The idle check: PING a silent connection, drop one that does not answer."""
        owner = self.owner
        now = self.loop.time()
        if self.busy:  # handlers are running: the socket's silence means nothing
            self.heard = now
        elif self.pinged is not None:
            if now - self.pinged >= owner._ping_timeout:
                self.dead = f"no answer to PING within {owner._ping_timeout} s"
                self._spawn(self.conn.disconnect(nowait=True))
                return
        elif now - self.heard >= owner._ping_interval:
            if not owner._wanted:  # no subscriptions left: stop reading
                self.stopping = True
                self._spawn(self.conn.disconnect(nowait=True))
                return
            self.pinged = now
            self._spawn(self._ping())
        if self.pinged is not None:
            due = self.pinged + owner._ping_timeout
        else:
            due = self.heard + owner._ping_interval
        self.timer = self.loop.call_at(due, self._watch)

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.send_command("PING", _WATCHDOG_PING)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.conn.disconnect()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
