"""A Redis connection of a backend's own, for its hot path: one round trip, few layers.

redis-py makes the connection (TLS, AUTH, SELECT, the RESP version) outside the
client's pool; after that, with hiredis installed, commands go out as pre-packed
bytes and replies are read by :class:`~rtkit._core.replies.Replies` (the rate
limiter's reader too): none of redis-py's per-command layers, no stream reader, and
one :class:`~rtkit._core.deadline.Deadline` instead of a timer per round trip.
Without hiredis (or on a redis-py that keeps its streams elsewhere) the same
calls go through redis-py's ``send_packed_command`` / ``read_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from .deadline import Deadline
from .replies import Replies, take_over

try:
    import hiredis
except ImportError:  # the rtkit[hiredis] extra is optional
    hiredis = None  # type: ignore[assignment]

__all__ = [
    "DedicatedConnection",
    "Wire",
    "bare_streams",
    "bulk",
    "new_connection",
    "new_node_connection",
]

Wire = tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]
"""A connection's streams and a hiredis reader."""

PUSH: Any = getattr(hiredis, "PushNotification", ())
"""The type of RESP3 push messages (pub/sub messages on a RESP3 connection)."""


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def bare_streams(conn: AbstractConnection) -> Wire | None:
    """The connection's streams and a fresh hiredis reader, or ``None`` to use redis-py's layers.

    For a connection Redis pushes to (a subscription), where the stream reader's flow
    control matters: it stops reading the socket while the reader is behind, so a slow
    consumer fills Redis's output buffer, which is bounded, not this process's memory.
    Round trips read through :class:`~rtkit._core.replies.Replies` instead. Only with
    hiredis, RESP2 or RESP3, and a redis-py that keeps its streams where this expects
    them (``_reader``, ``_writer``).
    """
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if (
        hiredis is None
        or str(getattr(conn, "protocol", 2) or 2) not in ("2", "3")
        or not isinstance(reader, asyncio.StreamReader)
        or not isinstance(writer, asyncio.StreamWriter)
    ):
        return None
    return reader, writer, hiredis.Reader()


def reply_error(reply: Any) -> redis_errors.ResponseError:
    """A hiredis error reply as redis-py's exception (``NoScriptError`` for NOSCRIPT)."""
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(text)
    return redis_errors.ResponseError(text)


def new_connection(client: aioredis.Redis) -> AbstractConnection:
    """A connection like the client's, outside its pool: RESP2, no per-read socket timeout.

    RESP2 whatever the client speaks: these connections only publish, subscribe
    and run scripts, and in RESP2 a subscription's messages are plain replies.
    """
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None, "protocol": 2}
    return pool.connection_class(**kwargs)


def new_node_connection(node: Any) -> AbstractConnection:
    """A connection to one node of a ``RedisCluster`` (a ``ClusterNode``), outside its
    pool, with the same settings as :func:`new_connection`."""
    kwargs = {**node.connection_kwargs, "socket_timeout": None, "protocol": 2}
    connection: AbstractConnection = node.connection_class(**kwargs)
    return connection


class DedicatedConnection:
    """One connection of a backend's own; each round trip bounded by ``timeout``.

    Args:
        client: The client whose settings the connection copies.
        connect: Makes the connection instead (a cluster node's, say).
        timeout: Seconds a connect, or a round trip, may take.
        doing: What the round trips do, for error messages ("publishing an event").
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout: float,
        doing: str,
        connect: Callable[[], AbstractConnection] | None = None,
    ) -> None:
        self._client = client
        self._connect = connect or (lambda: new_connection(client))
        self._timeout = timeout
        self._doing = doing
        self._conn: AbstractConnection | None = None
        self._wire: Replies | None = None
        self._deadline = Deadline(timeout, doing, self.drop)
        self._closing: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        """How many round trips were made."""

    @property
    def connected(self) -> bool:
        """Whether the connection is open (a failed round trip closes it)."""
        return self._conn is not None

    async def open(self) -> None:
        """Connect, within ``timeout``.

        Raises:
            rtkit.errors.BackendUnavailable: Redis did not answer in time.
        """
        if self._conn is not None:
            return
        conn = self._connect()
        try:
            async with asyncio.timeout(self._timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            error = self._deadline.error(exc)
            if error is exc:
                raise
            raise error from exc
        self._conn, self._wire = conn, take_over(conn)

    async def call(self, command: bytes, replies: int = 1) -> list[Any]:
        """Send ``command`` (pre-packed, ``replies`` commands) and read their replies.

        An error reply comes back as a ``redis.exceptions.ResponseError`` in the
        list, not raised: each command of a pipeline has its own fate.

        Raises:
            rtkit.errors.BackendUnavailable: The connection failed, or Redis did not
                answer within ``timeout`` (the connection is closed then).
        """
        wire = self._wire
        if wire is not None and wire.lost is not None:
            await self.close()  # Redis closed it while idle: a new one, before sending
        if self._conn is None:
            await self.open()
        deadline = self._deadline
        deadline.begin()
        try:
            out = await self._exchange(command, replies)
        except BaseException as exc:
            deadline.end()
            await self.close()
            error = deadline.error(exc)
            if error is exc:
                raise
            raise error from exc
        deadline.end()
        self.round_trips += 1
        return out

    async def _exchange(self, command: bytes, replies: int) -> list[Any]:
        wire = self._wire
        if wire is None:
            conn = self._conn
            assert conn is not None
            await conn.send_packed_command(command, check_health=False)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(await conn.read_response())
                except redis_errors.ResponseError as exc:
                    out.append(exc)
            return out
        wire.write(command)  # replies are awaited next: nothing to drain
        parser = wire.parser
        out = []
        while len(out) < replies:
            reply = parser.gets()
            if reply is False:
                reply = await wire.wait()
            out.append(reply_error(reply) if isinstance(reply, hiredis.ReplyError) else reply)
        return out

    def drop(self) -> None:
        """Close the connection now, without waiting; the next call opens a new one.

        For a round trip that overran (its read fails at once), and for a connection
        Redis refused a command on (a Sentinel's demoted master answers ``READONLY``:
        the next connection goes to the new one).
        """
        conn, self._conn, self._wire = self._conn, None, None
        if conn is not None:
            task = asyncio.create_task(conn.disconnect(nowait=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        conn, self._conn, self._wire = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def shut(self) -> None:
        """Close for good: the connection and the deadline's timer."""
        self._deadline.cancel()
        await self.close()
