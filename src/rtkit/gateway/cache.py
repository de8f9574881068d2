"""The gateway's response cache: what is cached, under which key, for how long.

The storage is a small bytes store with a time-to-live per entry
(`ResponseCache`); memory (LRU, bounded by entries and bytes) and Redis
(bounded by entry size and TTL) implement it. The HTTP rules live here, once.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._clock import Clock
from ..errors import BackendUnavailable

__all__ = [
    "CachedResponse",
    "ResponseCache",
    "parse_cache_control",
]

log = logging.getLogger("rtkit.gateway")

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024


class CachedResponse(BaseModel):
    """A response as the cache stores it."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored_at: float


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse ``Cache-Control`` header values into ``{directive: argument or None}``.

    >>> parse_cache_control(['max-age="60", no-store'])
    {'max-age': '60', 'no-store': None}
    """
    out: dict[str, str | None] = {}
    for value in values:
        for part in value.split(","):
            name, sep, arg = part.strip().partition("=")
            if name:
                out[name.strip().lower()] = arg.strip().strip('"') if sep else None
    return out


def seconds(directives: Mapping[str, str | None], name: str) -> int | None:
    """The non-negative integer argument of a directive such as ``max-age``, if valid."""
    arg = directives.get(name)
    return int(arg) if arg is not None and arg.isdigit() else None


class ResponseCache(abc.ABC):
    """Where the gateway keeps cached GET responses.

    Build one with `from_url()`. Entries larger than ``max_entry_bytes`` are
    not cached. A storage failure is logged and treated as a miss: the cache
    never breaks a request.
    """

    def __init__(self, *, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES) -> None:
        self.max_entry_bytes = max_entry_bytes

    @staticmethod
    def from_url(
        url: str = "memory://",
        *,
        prefix: str = "rtkit:",
        redis: Any = None,
        clock: Clock | None = None,
        max_entries: int = 1024,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> ResponseCache:
        """A cache on the backend ``url`` names.

        Args:
            url: ``memory://`` or a Redis URL.
            prefix: Redis key prefix (keys ``<prefix>{gateway-cache}:<sha256>``).
            redis: A ``redis.asyncio.Redis`` (``decode_responses=True``) to borrow.
            clock: Memory only: the time source for expiry (Redis expires keys itself).
            max_entries: Memory only: least recently used entries are evicted
                beyond this many.
            max_bytes: Memory only: ... or beyond this many bytes in total.
            max_entry_bytes: Larger responses are not cached (both backends).
        """
        from .._backends import backend_kind, check_prefix

        kind = backend_kind(url, component="ResponseCache")
        check_prefix(prefix)
        if kind == "memory":
            from .cache_memory import MemoryResponseCache

            return MemoryResponseCache(
                clock=clock,
                max_entries=max_entries,
                max_bytes=max_bytes,
                max_entry_bytes=max_entry_bytes,
            )
        from .cache_redis import RedisResponseCache

        return RedisResponseCache(url, prefix=prefix, redis=redis, max_entry_bytes=max_entry_bytes)

    @abc.abstractmethod
    async def _get(self, key: str) -> bytes | None:
        """The value stored under ``key``, if present and not expired."""

    @abc.abstractmethod
    async def _set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the storage (a borrowed Redis client stays open)."""

    # -- HTTP rules -----------------------------------------------------------------------

    @staticmethod
    def _primary(method: str, url: str) -> str:
        return hashlib.sha256(f"{method} {url}".encode()).hexdigest()

    @staticmethod
    def _variant(primary: str, vary: list[str], headers: Mapping[str, str]) -> str:
        parts = [primary, *(f"{name}:{headers.get(name, '')}" for name in vary)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    async def lookup(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> CachedResponse | None:
        """The cached response for a request, or ``None``.

        ``url`` is the path with its query; ``headers`` are the request headers
        (case-insensitive mapping) whose values select the ``Vary`` variant.
        """
        primary = self._primary(method, url)
        try:
            raw_vary = await self._get("vary:" + primary)
            if raw_vary is None:
                return None
            vary: list[str] = json.loads(raw_vary)
            raw = await self._get("entry:" + self._variant(primary, vary, headers))
        except BackendUnavailable as exc:
            log.warning("response cache lookup failed: %s", exc)
            return None
        return None if raw is None else CachedResponse.model_validate_json(raw)

    async def store(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        response: CachedResponse,
        vary: list[str],
        ttl: float,
    ) -> bool:
        """Cache ``response`` for ``ttl`` seconds; return whether it was stored.

        ``vary`` is the response's ``Vary`` header names (lower case); the
        entry is found again only by requests with the same values of them.
        """
        value = response.model_dump_json().encode()
        if len(value) > self.max_entry_bytes or ttl <= 0:
            return False
        primary = self._primary(method, url)
        try:
            await self._set("vary:" + primary, json.dumps(vary).encode(), ttl)
            await self._set("entry:" + self._variant(primary, vary, headers), value, ttl)
        except BackendUnavailable as exc:
            log.warning("response cache store failed: %s", exc)
            return False
        return True
