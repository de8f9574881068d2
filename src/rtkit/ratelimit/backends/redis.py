"""Redis rate limiter state: one Lua script (EVALSHA) per decision, auto-pipelined.

Every decision is one atomic script run covering all the limits of the hit.
Concurrent decisions are not sent one by one: while a round trip is under way,
new decisions queue up, and the next round trip sends all of them as one
pipeline on one dedicated connection, then reads the replies in order. Each
script still runs atomically; callers share round trips. A lone caller sends
its own command directly (no task switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any, Self

import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from ..._core.clock import Clock, SystemClock
from ..._core.deadline import Deadline
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import RedisHandle, load_lua, redis_unavailable
from ..._core.urls import BackendTarget
from ..._core.wire import PUSH, Wire, bare_streams, new_connection, reply_error
from ...errors import BackendUnavailable, Closed
from .._algorithms import now_us
from .._limits import Limit, Outcome

__all__ = ["RedisRateLimitBackend"]


_SCRIPT = load_lua("rtkit.ratelimit", "ratelimit.lua")
_SHA = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest()
_MAX_BATCH = 512
_MAX_CACHED = 1024

_Call = tuple[bytes, "asyncio.Future[list[int]]"]


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


_HEAD = _bulk(b"EVALSHA") + _bulk(_SHA.encode())
_ONE_KEY = b"*12\r\n" + _HEAD + _bulk(b"1")  # EVALSHA sha 1, then the key


class RedisRateLimitBackend:
    """Rate limiter state in Redis (``redis://``, ``rediss://``, ``unix://``).

    Keys look like ``<prefix>ratelimit:{<key>}:<limit>``: one Redis Cluster hash
    tag per limited key, so every limit of one hit lives in one slot.

    Args:
        handle: The Redis client, owned or borrowed.
        prefix: The key prefix.
        clock: If given, its time is sent to the script; otherwise Redis ``TIME`` is used.
        timeout: Bound, in seconds, on each round trip.
    """

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._prefix = prefix + "ratelimit:{"
        self._handle = handle
        self._clock = clock
        self._timeout = timeout
        self._queue: list[_Call] = []
        self._busy = False
        self._closed = False
        self._drainer: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._aborting: asyncio.Task[None] | None = None
        self._wire: Wire | None = None
        self._tails: dict[tuple[Any, int, bool], bytes] = {}
        self._deadline = Deadline(timeout, "deciding a rate limit", self._abort)
        self.round_trips = 0
        """How many pipelines were sent (each carries one or more decisions)."""

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """The backend for a Redis URL (or the borrowed client in ``target.redis``).

        A clock in ``target.clock`` that is not the system clock (a
        ``ManualClock`` in tests) sends its time with every decision; otherwise
        the Redis server's ``TIME`` decides, so hosts with skewed clocks agree.

        Args:
            target: Where to open.
            timeout: Seconds to wait for Redis to connect, and for each round trip.
        """
        clock = target.clock
        if isinstance(clock, SystemClock):
            clock = None  # the system clock: Redis TIME decides
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, prefix=target.prefix, clock=clock, timeout=handle.timeout)

    def key(self, key: str, limit: Limit) -> str:
        """The Redis key holding ``key``'s state under ``limit``."""
        return f"{self._prefix}{key}}}:{limit.ident}"

    def _key_bytes(self, key: str, limit: Limit) -> bytes:
        return self.key(key, limit).encode()

    async def start(self) -> None:
        """Load the script (so the first EVALSHA finds it)."""
        with redis_unavailable("loading the rate limiter script"):
            await self._handle.client.script_load(_SCRIPT)

    async def close(self) -> None:
        """Fail what is pending, release the connection."""
        self._closed = True
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        self._busy = False
        self._fail(self._queue, Closed("the rate limiter was closed"))
        self._queue = []
        self._deadline.cancel()
        await self._release()
        await self._handle.close()

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Delete ``key``'s state under ``limits``."""
        with redis_unavailable("resetting a rate limit"):
            await self._handle.client.delete(*(self._key_bytes(key, lim) for lim in limits))

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Run the script once for this hit (batched with concurrent ones)."""
        command = self._pack(key, limits, cost, count)
        if not self._busy and self._wire is not None and not self._closed:
            raw = await self._lone(command)
        else:
            raw = await self._queued(command)
        if len(raw) == 5:
            return [(raw[0] == 1, raw[1], raw[2], raw[3], raw[4])]
        return [
            (raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4])
            for i in range(0, len(raw), 5)
        ]

    def _pack(self, key: str, limits: Sequence[Limit], cost: int, count: bool) -> bytes:
        """``EVALSHA sha n key... now cost count limit-args...`` in RESP.

        Packed here rather than by redis-py: what follows the keys is cached per
        (limits, cost, count) (with ``now`` too when Redis ``TIME`` decides), and
        this is several times faster.
        """
        if len(limits) == 1 and self._clock is None:  # the common case: one limit, Redis time
            limit = limits[0]
            tail = self._tails.get((limit.ident, cost, count))
            if tail is None:
                tail = self._tail([limit], cost, count, (limit.ident, cost, count))
            name = f"{self._prefix}{key}}}:{limit.ident}".encode()
            return b"%b$%d\r\n%b\r\n%b" % (_ONE_KEY, len(name), name, tail)
        tail_key = (tuple(lim.ident for lim in limits), cost, count)
        tail = self._tails.get(tail_key) or self._tail(limits, cost, count, tail_key)
        now = b"" if self._clock is None else b"%d" % now_us(self._clock)
        keys = [_bulk(self._key_bytes(key, lim)) for lim in limits]
        count_args = 3 + len(keys) + 3 + 5 * len(limits)
        return b"".join(
            (b"*%d\r\n" % count_args, _HEAD, _bulk(b"%d" % len(keys)), *keys, _bulk(now), tail)
        )

    def _tail(self, limits: Sequence[Limit], cost: int, count: bool, cache_key: Any) -> bytes:
        """The arguments after ``now`` (cached); with ``now`` before them for the one-limit key."""
        args = [b"%d" % cost, b"1" if count else b"0"]
        for lim in limits:
            args += (lim.ident[0].encode(), *(b"%d" % n for n in _numbers(lim)))
        tail = b"".join(map(_bulk, args))
        if type(cache_key[0]) is str:  # the one-limit form: now (Redis TIME) goes first
            tail = _bulk(b"") + tail
        if len(self._tails) >= _MAX_CACHED:
            self._tails.clear()
        self._tails[cache_key] = tail
        return tail

    async def _queued(self, command: bytes) -> list[int]:
        """Queue ``command``; if no round trip is under way, send the queue now."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if not self._busy:
            self._busy = True
            await self._drain(until=future)
        return await future

    async def _lone(self, command: bytes) -> list[int]:
        """A caller alone on the connection: its own round trip on the bare streams.

        No future, no task switch, no per-call timer (see ``Deadline``). Callers
        that come meanwhile queue up, and are handed to the drainer after.
        """
        self._busy = True
        reader, writer, parser = self._wire  # type: ignore[misc]
        deadline = self._deadline
        deadline.begin()
        try:
            writer.write(command)  # a lone command: nothing to drain
            self.round_trips += 1
            reply = parser.gets()
            while reply is False or isinstance(reply, PUSH):  # RESP3 pushes are not replies
                if reply is False:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("Redis closed the connection")
                    parser.feed(data)
                reply = parser.gets()
        except BaseException as exc:
            deadline.end()
            await self._release()
            self._hand_over()
            error = deadline.error(exc)
            if error is exc:
                raise
            raise error from exc
        deadline.end()
        if isinstance(reply, Exception):
            self._hand_over()
            if isinstance(reply_error(reply), redis_errors.NoScriptError):
                return await self._queued(command)  # the script was flushed: the queue reloads it
            raise reply_error(reply)
        self._hand_over()
        return reply  # type: ignore[no-any-return]

    def _hand_over(self) -> None:
        """Give up the connection: to the drainer if callers queued, else to the next caller."""
        if self._queue and not self._closed:
            self._drainer = asyncio.create_task(self._drain(), name="rtkit-ratelimit")
        else:
            self._busy = False

    async def _drain(self, until: asyncio.Future[list[int]] | None = None) -> None:
        """Send what is queued, one pipeline per round trip, until ``until`` is settled.

        Whatever is left (callers that queued during the last round trip) is
        handed to a background task, so a caller never waits for others' hits.
        Only the holder of ``_busy`` runs this: one reader on the connection.
        """
        try:
            while self._queue and (until is None or not until.done()):
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
                try:
                    await self._send(batch)
                except BackendUnavailable as exc:
                    self._fail(batch, exc)
                except BaseException:  # cancelled (or a bug): never leave callers hanging
                    self._fail(batch, BackendUnavailable("a rate limit round trip was cut short"))
                    raise
        finally:
            if self._closed:
                self._fail(self._queue, Closed("the rate limiter was closed"))
                self._queue = []
            self._busy = bool(self._queue)
            if self._busy:  # hand over, still holding _busy
                self._drainer = asyncio.create_task(self._drain(), name="rtkit-ratelimit")

    async def _send(self, batch: list[_Call]) -> None:
        """One round trip: send every command, read every reply in order."""
        with redis_unavailable("deciding a rate limit"):
            conn = self._connection()
            try:
                async with asyncio.timeout(self._timeout):
                    if not conn.is_connected:
                        await conn.connect()  # type: ignore[no-untyped-call]
                        self._wire = bare_streams(conn)
                    await conn.send_packed_command([c for c, _ in batch])
                    self.round_trips += 1
                    missing: list[_Call] = []
                    for call in batch:
                        try:
                            reply = await conn.read_response()
                        except redis_errors.NoScriptError:
                            missing.append(call)
                            continue
                        except redis_errors.ResponseError as exc:
                            _settle(call[1], exc=exc)
                            continue
                        _settle(call[1], reply)
                    if missing:  # the script was flushed from Redis: load it again
                        await conn.send_command("SCRIPT", "LOAD", _SCRIPT)
                        await conn.read_response()
            except BaseException:
                await self._release()
                raise
        if missing:
            await self._send(missing)

    def _connection(self) -> AbstractConnection:
        """The dedicated connection (made lazily, outside the client's pool).

        It has no per-read socket timeout (redis-py would start a task for each
        send); each round trip as a whole is bounded by ``timeout`` instead.
        """
        if self._conn is None:
            self._conn = new_connection(self._handle.client)
        return self._conn

    async def _release(self) -> None:
        self._wire = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    def _abort(self) -> None:
        """A lone round trip overran: close its connection, so that its read fails now."""
        self._wire = None
        conn, self._conn = self._conn, None
        if conn is not None:
            self._aborting = asyncio.create_task(conn.disconnect(nowait=True))

    @staticmethod
    def _fail(batch: list[_Call], exc: BaseException) -> None:
        for _, future in batch:
            _settle(future, exc=exc)


def _numbers(limit: Limit) -> tuple[int, int, int, int]:
    return (limit.amount, limit.period_us, limit.capacity, limit.emission_us)


def _settle(
    future: asyncio.Future[list[int]], value: Any = None, *, exc: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
