"""The Redis response cache: shared by every gateway process, entries expire on their own."""

from __future__ import annotations

from typing import Any

from .._backends import Keyspace, RedisHandle, redis_unavailable
from .cache import DEFAULT_MAX_ENTRY_BYTES, ResponseCache

__all__ = ["RedisResponseCache"]


class RedisResponseCache(ResponseCache):
    """A `ResponseCache` on Redis (values as text, ``PX`` expiry)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "rtkit:",
        redis: Any = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        super().__init__(max_entry_bytes=max_entry_bytes)
        self._handle = RedisHandle(url, client=redis)
        self._keys = Keyspace(prefix, "gateway-cache")

    async def _get(self, key: str) -> bytes | None:
        with redis_unavailable("reading the response cache"):
            value = await self._handle.client.get(self._keys.key(key))
        return value.encode() if isinstance(value, str) else value

    async def _set(self, key: str, value: bytes, ttl: float) -> None:
        with redis_unavailable("writing the response cache"):
            await self._handle.client.set(
                self._keys.key(key), value.decode(), px=max(1, int(ttl * 1000))
            )

    async def close(self) -> None:
        """Close the Redis client if the cache owns it."""
        await self._handle.close()
