"""Idempotency stores: run a handler at most once per ``message_id`` within a window.

RabbitMQ delivers at least once: after a reconnect or a crashed consumer a
message can arrive twice. A :class:`DedupStore` given to
:class:`~rtkit.messaging.MessageConsumer` turns that into exactly-once handling
within ``window`` seconds:

* ``claim(id)`` marks the id *busy* for ``lease`` seconds (Redis ``SET NX EX``);
  it answers ``"new"`` (go ahead), ``"busy"`` (someone is handling it right
  now: look again later) or ``"done"`` (already handled: just ack);
* ``complete(id)`` marks it *done* for ``window`` seconds;
* ``release(id)`` forgets it after a failure, so a retry runs the handler again.

A consumer that dies mid-handler leaves a *busy* mark that expires after
``lease`` seconds; then the redelivered message is handled.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias

import redis.asyncio as aioredis

from .._backends import (
    DEFAULT_PREFIX,
    Keyspace,
    RedisHandle,
    backend_kind,
    check_prefix,
    load_lua,
)
from .._backends import redis_unavailable as _redis_unavailable
from .._clock import Clock, SystemClock
from ..errors import ConfigurationError

__all__ = ["ClaimState", "DedupStore", "MemoryDedupStore", "RedisDedupStore", "dedup_from_url"]

ClaimState: TypeAlias = Literal["new", "busy", "done"]
"""The answer of :meth:`DedupStore.claim`."""


class DedupStore(Protocol):
    """Remembers which message ids were handled (see the module docs)."""

    async def claim(self, message_id: str) -> ClaimState:
        """Try to take ``message_id`` for handling."""
        ...

    async def complete(self, message_id: str) -> None:
        """Record that ``message_id`` was handled."""
        ...

    async def release(self, message_id: str) -> None:
        """Forget a claim whose handler failed."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


def _check_times(window: float, lease: float) -> None:
    for name, value in (("window", window), ("lease", lease)):
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds")


class MemoryDedupStore:
    """A :class:`DedupStore` in this process (one consumer process, or tests).

    Args:
        window: Seconds a handled id is remembered.
        lease: Seconds a claim stays *busy* if its handler never finishes.
        clock: Time source (a :class:`~rtkit.ManualClock` in tests).
    """

    def __init__(
        self, *, window: float = 3600.0, lease: float = 60.0, clock: Clock | None = None
    ) -> None:
        _check_times(window, lease)
        self.window = window
        self.lease = lease
        self.clock: Clock = clock or SystemClock()
        self._marks: dict[str, tuple[ClaimState, float]] = {}

    def _purge(self, now: float) -> None:
        if len(self._marks) > 1024:
            self._marks = {k: v for k, v in self._marks.items() if v[1] > now}

    async def claim(self, message_id: str) -> ClaimState:
        """Take ``message_id`` unless it is busy or done."""
        now = self.clock.monotonic()
        mark = self._marks.get(message_id)
        if mark is not None and mark[1] > now:
            return mark[0]
        self._purge(now)
        self._marks[message_id] = ("busy", now + self.lease)
        return "new"

    async def complete(self, message_id: str) -> None:
        """Remember ``message_id`` as handled for ``window`` seconds."""
        self._marks[message_id] = ("done", self.clock.monotonic() + self.window)

    async def release(self, message_id: str) -> None:
        """Forget the claim on ``message_id`` (a completed id stays done)."""
        mark = self._marks.get(message_id)
        if mark is not None and mark[0] == "busy":
            del self._marks[message_id]

    async def close(self) -> None:
        """Nothing to release."""


class RedisDedupStore:
    """A :class:`DedupStore` in Redis, shared by every consumer replica.

    One key per id, ``<prefix>{dedup}:<id>``, set with ``SET NX PX`` (busy) and
    overwritten with the window's expiry when done. Claim and release are one
    Lua script each (one atomic round trip).

    Args:
        url: A ``redis://`` URL (ignored if ``redis`` is given).
        redis: A shared client made with ``decode_responses=True`` (borrowed, not closed).
        prefix: Key prefix.
        window: Seconds a handled id is remembered.
        lease: Seconds a claim stays *busy* if its handler never finishes.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        redis: aioredis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        window: float = 3600.0,
        lease: float = 60.0,
    ) -> None:
        _check_times(window, lease)
        self._handle = RedisHandle(url, client=redis)
        self._keys = Keyspace(check_prefix(prefix), "dedup")
        self.window = window
        self.lease = lease
        client = self._handle.client
        self._claim = client.register_script(load_lua("rtkit.messaging", "dedup_claim.lua"))
        self._release = client.register_script(load_lua("rtkit.messaging", "dedup_release.lua"))

    async def claim(self, message_id: str) -> ClaimState:
        """``SET <key> busy NX PX lease``; if taken, report the current mark."""
        with _redis_unavailable("claiming a message id"):
            state = await self._claim(
                keys=[self._keys.key(message_id)], args=[max(1, int(self.lease * 1000))]
            )
        return "new" if state == "new" else "done" if state == "done" else "busy"

    async def complete(self, message_id: str) -> None:
        """Mark ``message_id`` done for ``window`` seconds."""
        with _redis_unavailable("completing a message id"):
            await self._handle.client.set(
                self._keys.key(message_id), "done", px=max(1, int(self.window * 1000))
            )

    async def release(self, message_id: str) -> None:
        """Delete the claim (only if it is still busy)."""
        with _redis_unavailable("releasing a message id"):
            await self._release(keys=[self._keys.key(message_id)])

    async def close(self) -> None:
        """Close the Redis client if this store made it."""
        await self._handle.close()


def dedup_from_url(
    url: str,
    *,
    redis: aioredis.Redis | None = None,
    prefix: str = DEFAULT_PREFIX,
    window: float = 3600.0,
    lease: float = 60.0,
    clock: Clock | None = None,
) -> DedupStore:
    """A :class:`MemoryDedupStore` for ``memory://``, a :class:`RedisDedupStore` for ``redis://``."""
    if backend_kind(url, component="DedupStore") == "memory":
        return MemoryDedupStore(window=window, lease=lease, clock=clock)
    return RedisDedupStore(url, redis=redis, prefix=prefix, window=window, lease=lease)
