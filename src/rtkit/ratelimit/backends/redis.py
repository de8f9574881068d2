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
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import RedisHandle, load_lua, redis_unavailable
from ..._core.urls import BackendTarget
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
        self._tails: dict[tuple[tuple[str, ...], int, bool], bytes] = {}
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
        raw = await self._call(self._pack(key, limits, cost, count))
        return [
            (bool(raw[i]), raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4])
            for i in range(0, len(raw), 5)
        ]

    def _pack(self, key: str, limits: Sequence[Limit], cost: int, count: bool) -> bytes:
        """``EVALSHA sha n key... now cost count limit-args...`` in RESP.

        Packed here rather than by redis-py: the arguments after ``now`` are
        cached per (limits, cost, count), and this is several times faster.
        """
        tail_key = (tuple(lim.ident for lim in limits), cost, count)
        tail = self._tails.get(tail_key)
        if tail is None:
            args = [b"%d" % cost, b"1" if count else b"0"]
            for lim in limits:
                args += (lim.ident[0].encode(), *(b"%d" % n for n in _numbers(lim)))
            tail = b"".join(map(_bulk, args))
            if len(self._tails) >= _MAX_CACHED:
                self._tails.clear()
            self._tails[tail_key] = tail
        now = b"" if self._clock is None else b"%d" % now_us(self._clock)
        keys = [_bulk(self._key_bytes(key, lim)) for lim in limits]
        count_args = 3 + len(keys) + 3 + 5 * len(limits)
        return b"".join(
            (b"*%d\r\n" % count_args, _HEAD, _bulk(b"%d" % len(keys)), *keys, _bulk(now), tail)
        )

    async def _call(self, command: bytes) -> list[int]:
        """Queue ``command``; if no round trip is under way, send the queue now."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if not self._busy:  # a lone caller pays no task switch
            self._busy = True
            await self._drain(until=future)
        return await future

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
            pool = self._handle.client.connection_pool
            kwargs = {**pool.connection_kwargs, "socket_timeout": None}
            self._conn = pool.connection_class(**kwargs)
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

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
