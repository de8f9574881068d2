"""The gateway's response cache: what is cached, under which key, for how long.

The storage is a [`CacheBackend`][rtkit.backends.CacheBackend] (bytes under a
key, with a time-to-live); the HTTP rules live here, once: the gateway asks
``request_policy`` whether a request may use the cache, ``fresh_enough`` whether a
hit may answer it, and ``storable`` whether a response may be kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from .._core.clock import Clock
from .._core.component import Component
from .._core.validate import check_int
from ..errors import BackendUnavailable
from .cache.base import CacheBackend
from .cache.memory import MemoryCacheBackend

__all__ = [
    "DEFAULT_MAX_ENTRY_BYTES",
    "CachedResponse",
    "ResponseCache",
    "fresh_enough",
    "parse_cache_control",
    "request_policy",
    "storable",
]

log = logging.getLogger("rtkit.gateway")

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
"""Responses larger than this (1 MiB, as stored) are not cached."""

HeaderPairs = Sequence[tuple[str, str]]


class RequestHeaders(Protocol):
    """The request headers the rules read (Starlette's ``Headers`` is one)."""

    def __contains__(self, name: object) -> bool: ...

    def getlist(self, key: str) -> list[str]: ...


class CachedResponse(BaseModel):
    """A response as the cache stores it.

    Attributes:
        status: The HTTP status.
        headers: The response headers, in order, repeated ones included.
        body: The body, as the upstream sent it (still content-encoded).
        stored_at: When it was stored (epoch seconds, the gateway's clock).
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored_at: float


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse ``Cache-Control`` header values into ``{directive: argument or None}``.

    ``['max-age="60", no-store']`` gives ``{"max-age": "60", "no-store": None}``.
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


def request_policy(method: str, headers: RequestHeaders) -> tuple[bool, bool]:
    """For a request: (may its response be stored, may the cache answer it).

    Only GET requests without ``Authorization`` take part; ``Cache-Control:
    no-store`` keeps the cache out, ``no-cache`` or ``max-age=0`` skip the lookup.
    """
    if method != "GET" or "authorization" in headers:
        return False, False
    cc = parse_cache_control(headers.getlist("cache-control"))
    if "no-store" in cc:
        return True, False
    return True, "no-cache" not in cc and seconds(cc, "max-age") != 0


def fresh_enough(headers: RequestHeaders, age: float) -> bool:
    """Whether a hit ``age`` seconds old may answer a request (its ``max-age=N``)."""
    max_age = seconds(parse_cache_control(headers.getlist("cache-control")), "max-age")
    return max_age is None or age <= max_age


def _getlist(headers: HeaderPairs, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def storable(
    status: int, request: RequestHeaders, response: HeaderPairs
) -> tuple[list[str], int | None] | None:
    """Whether a response may be stored: ``None``, or its ``Vary`` names and its own TTL.

    Only status 200, never for a request saying ``no-store``, nor a response
    saying ``no-store``, ``no-cache`` or ``private``, setting a cookie or
    varying on ``*``. The TTL is ``s-maxage``, else ``max-age``, else ``None``
    (the gateway's ``cache_ttl`` applies).
    """
    if status != 200 or "no-store" in parse_cache_control(request.getlist("cache-control")):
        return None
    cc = parse_cache_control(_getlist(response, "cache-control"))
    if {"no-store", "no-cache", "private"} & cc.keys() or _getlist(response, "set-cookie"):
        return None
    vary = sorted(
        {v.strip().lower() for value in _getlist(response, "vary") for v in value.split(",")} - {""}
    )
    if "*" in vary:
        return None
    ttl = seconds(cc, "s-maxage")
    return vary, seconds(cc, "max-age") if ttl is None else ttl


class ResponseCache(Component):
    """Where the gateway keeps cached GET responses.

    ``ResponseCache()`` keeps them in this process (a private memory backend);
    ``ResponseCache.from_url("redis://...")`` shares them between gateway
    processes. On memory, ``from_url`` also takes ``max_entries`` (1024) and
    ``max_bytes`` (64 MiB): least recently used entries are evicted beyond them;
    on Redis, ``timeout``. A storage failure is logged and treated as a miss:
    the cache never breaks a request.

    Args:
        backend: Where entries are stored (default: a private memory backend).
        clock: Where the private memory backend reads the time for expiry.
        max_entry_bytes: Larger responses (as stored) are not cached.

    Raises:
        rtkit.errors.ConfigurationError: ``max_entry_bytes`` is not a positive int.
    """

    _backends = {
        "memory": "rtkit.gateway.cache.memory:MemoryCacheBackend",
        "redis": "rtkit.gateway.cache.redis:RedisCacheBackend",
    }

    def __init__(
        self,
        backend: CacheBackend | None = None,
        *,
        clock: Clock | None = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        self._backend: CacheBackend = (
            backend if backend is not None else MemoryCacheBackend(clock=clock)
        )
        self.max_entry_bytes = check_int(max_entry_bytes, "max_entry_bytes")

    async def _close(self) -> None:
        await self._backend.close()

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

        Args:
            method: The request method.
            url: The path with its query.
            headers: The request headers (a case-insensitive mapping); the
                values of the stored response's ``Vary`` names select the variant.

        Raises:
            rtkit.errors.Closed: The cache was closed.
        """
        if not self._live:
            await self._ready()
        primary = self._primary(method, url)
        try:
            raw_vary = await self._backend.get("vary:" + primary)
            if raw_vary is None:
                return None
            vary: list[str] = json.loads(raw_vary)
            raw = await self._backend.get("entry:" + self._variant(primary, vary, headers))
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

        Args:
            method: The request method.
            url: The path with its query.
            headers: The request headers.
            response: What to store.
            vary: The response's ``Vary`` header names (lower case): the entry is
                found again only by requests with the same values of them.
            ttl: Seconds to keep it (nothing is stored for 0 or less).

        Raises:
            rtkit.errors.Closed: The cache was closed.
        """
        if not self._live:
            await self._ready()
        value = response.model_dump_json().encode()
        if len(value) > self.max_entry_bytes or ttl <= 0:
            return False
        primary = self._primary(method, url)
        try:
            await self._backend.set("vary:" + primary, json.dumps(vary).encode(), ttl)
            await self._backend.set("entry:" + self._variant(primary, vary, headers), value, ttl)
        except BackendUnavailable as exc:
            log.warning("response cache store failed: %s", exc)
            return False
        return True
