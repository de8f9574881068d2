"""The dedup backend in Redis, shared by every consumer replica.

One key per id, ``{<prefix>dedup:<id>}`` (its own cluster slot), set with ``SET NX PX`` (busy) and
overwritten with the window's expiry when done. Claim and release are one Lua
script each (one atomic round trip). Redis expires the keys on its own clock.
"""

from __future__ import annotations

from typing import Self

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, RedisHandle, load_lua, redis_unavailable
from ..._core.urls import DEFAULT_PREFIX, BackendTarget
from .base import ClaimState

__all__ = ["RedisDedupBackend"]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisDedupBackend:
    """Marks as Redis keys with an expiry.

    Args:
        handle: The Redis client, owned (closed with this backend) or borrowed.
        prefix: The start of every key.
    """

    def __init__(self, handle: RedisHandle, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._handle = handle
        self._keys = Keyspace(prefix, "dedup")
        client = handle.client
        self._claim = client.register_script(load_lua("rtkit.messaging", "dedup_claim.lua"))
        self._release = client.register_script(load_lua("rtkit.messaging", "dedup_release.lua"))

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """The backend for a Redis target; ``timeout`` bounds each round trip."""
        return cls(RedisHandle.open(target, timeout=timeout), prefix=target.prefix)

    async def claim(self, key: str, *, lease: float, now: float) -> ClaimState:
        """``SET <key> busy NX PX lease``; if taken, report the current mark."""
        with redis_unavailable("claiming a message id"):
            state = await self._claim(keys=[self._keys.entity_key(key)], args=[_ms(lease)])
        return "new" if state == "new" else "done" if state == "done" else "busy"

    async def complete(self, key: str, *, window: float, now: float) -> None:
        """Mark ``key`` done for ``window`` seconds."""
        with redis_unavailable("completing a message id"):
            await self._handle.client.set(self._keys.entity_key(key), "done", px=_ms(window))

    async def release(self, key: str) -> None:
        """Delete the claim (only if it is still busy)."""
        with redis_unavailable("releasing a message id"):
            await self._release(keys=[self._keys.entity_key(key)])

    async def close(self) -> None:
        """Close the Redis client if this backend made it."""
        await self._handle.close()
