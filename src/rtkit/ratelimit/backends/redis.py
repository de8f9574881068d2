"""Redis rate limiter state: one Lua script (EVALSHA) per decision, auto-pipelined.

Every decision is one atomic script run covering all the limits of the hit, on
the Redis that owns the key: the one Redis, the master Sentinel names, or, on a
Redis Cluster, the master of the key's slot. Concurrent decisions are not sent
one by one: each owning node has a *lane* (a dedicated connection); while a
round trip is under way on a lane, new decisions for that node queue up, and the
next round trip sends all of them as one pipeline, then reads the replies in
order. Each script still runs atomically; callers share round trips. A lone
caller sends its own command directly (no task switch).

On a cluster a decision whose node died fails at once (the limiter's outage
policy decides) and makes the backend re-read the slot map, so the decisions
after a failover go to the promoted replica; an answer that the slot moved
(``MOVED``) re-reads the map and sends the decision again, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self, TypeVar

import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from ..._core.clock import Clock, SystemClock
from ..._core.deadline import Deadline
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import (
    Keyspace,
    RedisHandle,
    is_cluster,
    load_lua,
    redis_unavailable,
    refresh_topology,
)
from ..._core.replies import Replies, take_over
from ..._core.urls import BackendTarget
from ..._core.wire import new_connection, new_node_connection, reply_error
from ...errors import BackendUnavailable, Closed
from .._algorithms import now_us
from .._limits import US, Decision, Limit, Outcome, make_decision

__all__ = ["RedisRateLimitBackend"]


_SCRIPT = load_lua("rtkit.ratelimit", "ratelimit.lua")
_SHA = hashlib.sha1(_SCRIPT.encode("utf-8")).hexdigest()
_MAX_BATCH = 512
_MAX_CACHED = 1024
_REFRESH_EVERY = 0.5  # seconds between two re-reads of a cluster's slot map
_MOVED = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY")

_Call = tuple[bytes, "asyncio.Future[list[int]]"]
_T = TypeVar("_T")


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


_HEAD = _bulk(b"EVALSHA") + _bulk(_SHA.encode())
_ONE_KEY = b"*12\r\n" + _HEAD + _bulk(b"1")  # EVALSHA sha 1, then the key
_ONE_NAME = _ONE_KEY + b"$"  # ... then the key's length
_LOAD = b"*3\r\n" + _bulk(b"SCRIPT") + _bulk(b"LOAD") + _bulk(_SCRIPT.encode())


class RedisRateLimitBackend:
    """Rate limiter state in Redis: one Redis, Sentinel, or a Redis Cluster.

    Keys look like ``{<prefix>ratelimit:<key>}:<limit>``: one Redis Cluster hash
    tag per limited key (holding the prefix), so every limit of one hit lives in
    one slot and the keys spread over a cluster's masters.

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
        self._keys = Keyspace(prefix, "ratelimit")
        self._prefix = self._keys.tag()[:-1] + ":"  # "{<prefix>ratelimit:", the key follows
        self._handle = handle
        self._clock = clock
        self._timeout = timeout
        self._closed = False
        self._cluster = is_cluster(handle.client)
        self._direct = not self._cluster  # one lane (one Redis, Sentinel's master), not closed
        self._name_head = self._prefix.encode()
        self._ones: dict[str, tuple[int, bytes]] = {}
        self._heads: dict[int, bytes] = {}
        self._lanes: dict[str, _Lane] = {}
        self._lane = _Lane(self, lambda: new_connection(handle.client))
        self._refreshed = -_REFRESH_EVERY
        self._refreshing: asyncio.Task[None] | None = None
        self._tails: dict[tuple[Any, int, bool], bytes] = {}
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
        """Load the script (so the first EVALSHA finds it; on a cluster, on every master)."""
        with redis_unavailable("loading the rate limiter script"):
            await self._handle.client.script_load(_SCRIPT)

    async def close(self) -> None:
        """Fail what is pending, release the connections."""
        self._closed = True
        self._direct = False
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        for lane in (self._lane, *self._lanes.values()):
            await lane.close()
        await self._handle.close()

    async def reset(self, key: str, limits: Sequence[Limit]) -> None:
        """Delete ``key``'s state under ``limits`` (one slot: one command)."""
        with redis_unavailable("resetting a rate limit"):
            await self._handle.client.delete(*(self._key_bytes(key, lim) for lim in limits))

    async def decide(
        self, key: str, limits: Sequence[Limit], cost: int, count: bool
    ) -> list[Outcome]:
        """Run the script once for this hit on the key's node (batched with concurrent ones)."""
        raw = await self._round_trip(key, self._pack(key, limits, cost, count))
        if len(raw) == 5:
            return [(raw[0] == 1, raw[1], raw[2], raw[3], raw[4])]
        return [
            (raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4])
            for i in range(0, len(raw), 5)
        ]

    def hit_one(self, key: str, limit: Limit) -> Coroutine[Any, Any, Decision]:
        """``most_restrictive(await decide(key, [limit], 1, True))``: the limiter's hot path.

        Returned, not awaited: for a lone caller on one Redis it is the lane's own
        round trip, which makes the decision from the reply (no frame in between).
        """
        lane = self._lane
        if self._direct and not lane.busy and lane.wire is not None:
            return lane.lone(self._pack_one(key, limit), _decision)
        return self._hit(key, limit)

    async def _hit(self, key: str, limit: Limit) -> Decision:
        return _decision(await self._round_trip(key, self._pack(key, (limit,), 1, True)))

    def _round_trip(self, key: str, command: bytes) -> Coroutine[Any, Any, list[int]]:
        """The round trip for ``command`` (returned, for the caller to await): alone on
        the lane if none is under way (no future, no task switch), else queued."""
        if self._cluster:
            return self._routed(key, command)
        lane = self._lane
        if not lane.busy and lane.wire is not None and not self._closed:
            return lane.lone(command, _raw)
        return lane.queued(command)

    # ------------------------------------------------------------------ a cluster

    async def _routed(self, key: str, command: bytes) -> list[int]:
        """The decision on the lane of the master owning ``key``'s slot."""
        slot = key_slot(f"{self._prefix}{key}}}".encode())
        for attempt in range(2):
            lane = self._lane_for(slot)
            try:
                if not lane.busy and lane.wire is not None and not self._closed:
                    return await lane.lone(command, _raw)
                return await lane.queued(command)
            except redis_errors.ResponseError as exc:
                if attempt or not str(exc).startswith(_MOVED):
                    raise BackendUnavailable(f"Redis Cluster refused a decision: {exc}") from exc
                await self._refresh(force=True)  # the slot moved: send it again, once
            except BackendUnavailable:
                self._refresh_soon()  # a node died: the next decisions find its successor
                raise
        raise AssertionError("unreachable")

    def _lane_for(self, slot: int) -> _Lane:
        nodes: Any = getattr(self._handle.client, "nodes_manager")  # noqa: B009
        node = nodes.get_node_from_slot(slot)
        lane = self._lanes.get(node.name)
        if lane is None:
            lane = self._lanes[node.name] = _Lane(self, lambda: new_node_connection(node))
        return lane

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())

    async def _refresh(self, *, force: bool = False) -> None:
        """Re-read the slot map (at most every ``_REFRESH_EVERY`` s unless ``force``)."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._refreshed < _REFRESH_EVERY:
            return
        self._refreshed = loop.time()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await refresh_topology(self._handle.client)
        nodes: Any = getattr(self._handle.client, "nodes_manager")  # noqa: B009
        live = {node.name for node in nodes.nodes_cache.values()}
        for name in [n for n in self._lanes if n not in live]:
            lane = self._lanes.pop(name)
            if not lane.busy:
                await lane.close()

    # ------------------------------------------------------------------ packing

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

    def _pack_one(self, key: str, limit: Limit) -> bytes:
        """``_pack(key, [limit], 1, True)``, with what surrounds the key cached per limit."""
        if self._clock is not None:
            return self._pack(key, (limit,), 1, True)  # now goes in the middle
        around = self._ones.get(limit.ident) or self._around(limit)
        name = key.encode()
        size = around[0] + len(name)  # of the key's full name
        return b"".join((self._heads.get(size) or self._head(size), name, around[1]))

    def _head(self, size: int) -> bytes:
        """What comes before the key for a full key name of ``size`` bytes (cached)."""
        head = b"%b%d\r\n%b" % (_ONE_NAME, size, self._name_head)
        if len(self._heads) >= _MAX_CACHED:
            self._heads.clear()
        self._heads[size] = head
        return head

    def _around(self, limit: Limit) -> tuple[int, bytes]:
        """The full key name's length less the key's, and what follows the key (cached)."""
        ident = limit.ident.encode()
        after = b"}:%b\r\n%b" % (ident, self._tail([limit], 1, True, (limit.ident, 1, True)))
        around = (len(self._name_head) + 2 + len(ident), after)
        if len(self._ones) >= _MAX_CACHED:
            self._ones.clear()
        self._ones[limit.ident] = around
        return around

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


class _Lane:
    """One dedicated connection to one Redis node, and the decisions queued for it.

    Only the holder of ``busy`` reads the connection: a lone caller, or the drainer
    that sends what queued meanwhile as one pipeline per round trip.
    """

    def __init__(
        self, backend: RedisRateLimitBackend, connect: Callable[[], AbstractConnection]
    ) -> None:
        self._backend = backend
        self._connect = connect
        self._timeout = backend._timeout
        self.queue: list[_Call] = []
        self.busy = False
        self._drainer: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._aborting: asyncio.Task[None] | None = None
        self.wire: Replies | None = None
        """The connection's replies, once connected (``None`` without hiredis: redis-py reads)."""
        self._deadline = Deadline(self._timeout, "deciding a rate limit", self._abort)

    async def close(self) -> None:
        """Fail what is pending, release the connection."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        self.busy = False
        self._fail(self.queue, Closed("the rate limiter was closed"))
        self.queue = []
        self._deadline.cancel()
        await self._release()

    async def queued(self, command: bytes) -> list[int]:
        """Queue ``command``; if no round trip is under way, send the queue now."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.queue.append((command, future))
        if not self.busy:
            self.busy = True
            await self._drain(until=future)
        return await future

    async def lone(self, command: bytes, shape: Callable[[list[int]], _T]) -> _T:
        """A caller alone on the connection: its own round trip, its reply's future
        settled by the connection's protocol (see ``Replies``).

        No task switch, no per-call timer (see ``Deadline``). Callers that come
        meanwhile queue up, and are handed to the drainer after. Returns ``shape(reply)``.
        """
        self.busy = True
        wire: Replies = self.wire  # type: ignore[assignment]
        deadline = self._deadline
        deadline.begin()
        try:
            wire.write(command)  # a lone command: nothing to drain
            self._backend.round_trips += 1
            reply = wire.parser.gets()
            if reply is False:
                reply = await wire.wait()
        except BaseException as exc:
            deadline.end()
            await self._release()
            self._hand_over()
            error = deadline.error(exc)
            if error is exc:
                raise
            raise error from exc
        deadline.end()
        if self.queue:
            self._hand_over()
        else:
            self.busy = False
        if isinstance(reply, Exception):
            if isinstance(reply_error(reply), redis_errors.NoScriptError):
                return shape(await self.queued(command))  # the script was flushed: reloaded
            raise reply_error(reply)
        return shape(reply)

    def _hand_over(self) -> None:
        """Give up the connection: to the drainer if callers queued, else to the next caller."""
        if self.queue and not self._backend._closed:
            self._drainer = asyncio.create_task(self._drain(), name="rtkit-ratelimit")
        else:
            self.busy = False

    async def _drain(self, until: asyncio.Future[list[int]] | None = None) -> None:
        """Send what is queued, one pipeline per round trip, until ``until`` is settled.

        Whatever is left (callers that queued during the last round trip) is
        handed to a background task, so a caller never waits for others' hits.
        Only the holder of ``_busy`` runs this: one reader on the connection.
        """
        try:
            while self.queue and (until is None or not until.done()):
                batch = self.queue[:_MAX_BATCH]
                del self.queue[:_MAX_BATCH]
                try:
                    await self._send(batch)
                except BackendUnavailable as exc:
                    self._fail(batch, exc)
                except BaseException:  # cancelled (or a bug): never leave callers hanging
                    self._fail(batch, BackendUnavailable("a rate limit round trip was cut short"))
                    raise
        finally:
            if self._backend._closed:
                self._fail(self.queue, Closed("the rate limiter was closed"))
                self.queue = []
            self.busy = bool(self.queue)
            if self.busy:  # hand over, still holding _busy
                self._drainer = asyncio.create_task(self._drain(), name="rtkit-ratelimit")

    async def _send(self, batch: list[_Call]) -> None:
        """One round trip: send every command, read every reply in order."""
        with redis_unavailable("deciding a rate limit"):
            conn = self._connection()
            try:
                async with asyncio.timeout(self._timeout):
                    if not conn.is_connected:
                        await conn.connect()  # type: ignore[no-untyped-call]
                        self.wire = take_over(conn)
                    self._backend.round_trips += 1
                    if self.wire is not None:
                        missing = await self._pipeline(self.wire, batch)
                    else:
                        missing = await self._pipeline_redis_py(conn, batch)
            except BaseException:
                await self._release()
                raise
        if missing:
            await self._send(missing)

    @staticmethod
    async def _pipeline(wire: Replies, batch: list[_Call]) -> list[_Call]:
        """Send every command, settle every caller in order; return the calls whose
        script Redis had lost (NOSCRIPT), once it is loaded again."""
        wire.write(b"".join([c for c, _ in batch]))
        missing: list[_Call] = []
        for call in batch:
            reply = await wire.reply()
            if not isinstance(reply, Exception):
                _settle(call[1], reply)
                continue
            error = reply_error(reply)
            if isinstance(error, redis_errors.NoScriptError):
                missing.append(call)
            else:
                _settle(call[1], exc=error)
        if missing:  # the script was flushed from Redis: load it again
            wire.write(_LOAD)
            loaded = await wire.reply()
            if isinstance(loaded, Exception):
                raise reply_error(loaded)
        return missing

    @staticmethod
    async def _pipeline_redis_py(conn: AbstractConnection, batch: list[_Call]) -> list[_Call]:
        """``_pipeline`` through redis-py's layers (without hiredis)."""
        await conn.send_packed_command([c for c, _ in batch])
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
        return missing

    def _connection(self) -> AbstractConnection:
        """The dedicated connection (made lazily, outside the client's pool).

        It has no per-read socket timeout (redis-py would start a task for each
        send); each round trip as a whole is bounded by ``timeout`` instead.
        """
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    async def _release(self) -> None:
        self.wire = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    def _abort(self) -> None:
        """A lone round trip overran: close its connection, so that its read fails now."""
        self.wire = None
        conn, self._conn = self._conn, None
        if conn is not None:
            self._aborting = asyncio.create_task(conn.disconnect(nowait=True))

    @staticmethod
    def _fail(batch: list[_Call], exc: BaseException) -> None:
        for _, future in batch:
            _settle(future, exc=exc)


def _decision(reply: list[int]) -> Decision:
    """One limit's reply as its decision (what ``most_restrictive`` makes of it)."""
    allowed, limit, remaining, reset_us, retry_us = reply
    return make_decision((allowed == 1, limit, remaining, reset_us / US, retry_us / US))


def _raw(reply: list[int]) -> list[int]:
    return reply


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
