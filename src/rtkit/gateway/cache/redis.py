"""The Redis response cache backend: shared by every gateway process; entries expire by TTL."""

from __future__ import annotations

from typing import Self

from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.redis import Keyspace, RedisHandle, redis_unavailable
from ..._core.urls import BackendTarget
from .base import CacheBackend

__all__ = ["RedisCacheBackend"]


class RedisCacheBackend(CacheBackend):
    """A cache backend on Redis: one key per entry (values as text), ``PX`` expiry.

    Keys are ``{<prefix>gateway-cache:<kind>:<sha256>}``: one cluster slot per entry.
    """

    def __init__(self, handle: RedisHandle, keys: Keyspace) -> None:
        self._handle = handle
        self._keys = keys

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """A backend on the Redis that ``target`` names (or on its borrowed client).

        Args:
            target: Where to open.
            timeout: Seconds to wait for Redis to connect or answer.
        """
        return cls(
            RedisHandle.open(target, timeout=timeout), Keyspace(target.prefix, "gateway-cache")
        )

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``; Redis drops expired keys itself."""
        with redis_unavailable("reading the response cache"):
            value = await self._handle.client.get(self._keys.entity_key(key))
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (at least one millisecond)."""
        with redis_unavailable("writing the response cache"):
            await self._handle.client.set(
                self._keys.entity_key(key), value.decode(), px=max(1, int(ttl * 1000))
            )

    async def delete(self, key: str) -> None:
        """Remove ``key`` (``DEL``)."""
        with redis_unavailable("invalidating the response cache"):
            await self._handle.client.delete(self._keys.entity_key(key))

    async def close(self) -> None:
        """Close the Redis client if this backend made it (a borrowed one stays open)."""
        await self._handle.close()
