"""The gateway's response cache: what is cached, under which key, for how long.

The storage is a [`CacheBackend`][rtkit.backends.CacheBackend] (bytes under a
key, with a time-to-live); the HTTP rules live here, once: the gateway asks
``request_policy`` whether a request may use the cache, ``fresh_enough`` whether a
hit may answer it, ``storable`` whether a response may be kept and ``unsafe``
whether a request invalidates what is stored for its URL.

Keys: ``index:<sha256(method url)>`` holds the names the entries of that URL are
keyed on (the response's ``Vary`` and what the gateway adds) and a generation;
``response:<sha256(url, generation, values)>`` holds one entry. Invalidating a URL
deletes its index: every entry of the old generation is unreachable at once,
whatever it was keyed on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from .._core.clock import Clock
from .._core.component import Component
from .._core.validate import check_int
from ..errors import BackendUnavailable
from .cache.base import CacheBackend
from .cache.memory import MemoryCacheBackend

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_MAX_ENTRY_BYTES",
    "METHOD_OVERRIDES",
    "CachedResponse",
    "ResponseCache",
    "fresh_enough",
    "parse_cache_control",
    "request_policy",
    "storable",
    "unsafe",
]

log = logging.getLogger("rtkit.gateway")

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
"""Responses larger than this (1 MiB, as stored) are not cached."""

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Request headers that carry credentials: a request with one uses the cache only when
its route names that header in ``Route.vary``."""

METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
"""Headers some frameworks read as the real method: a request with one is unsafe."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

HeaderPairs = Sequence[tuple[str, str]]
KeyHeaders = Mapping[str, str] | HeaderPairs
"""Request headers a cache key is made of: a mapping (looked up case-insensitively,
repeated headers included when it is a Starlette ``Headers``) or ``(name, value)``
pairs."""


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


def _has_body(headers: RequestHeaders) -> bool:
    lengths = headers.getlist("content-length")
    return "transfer-encoding" in headers or any(v.strip().lstrip("0") for v in lengths)


def request_policy(
    method: str,
    headers: RequestHeaders,
    *,
    keyed: Collection[str] = (),
    credentials: Collection[str] = CREDENTIAL_HEADERS,
) -> tuple[bool, bool]:
    """For a request: (may its response be stored, may the cache answer it).

    Only GET requests take part, and only without a body, without a method override
    (``METHOD_OVERRIDES``) and without credentials (a header in ``credentials``)
    unless each credential header it carries is ``keyed`` (in the key of every entry);
    ``Cache-Control: no-store`` keeps the cache out, ``no-cache`` or ``max-age=0``
    skip the lookup.
    """
    if method != "GET" or _has_body(headers):
        return False, False
    if any(name in headers for name in METHOD_OVERRIDES):
        return False, False
    if any(name in headers for name in credentials if name not in keyed):
        return False, False
    cc = parse_cache_control(headers.getlist("cache-control"))
    if "no-store" in cc:
        return True, False
    return True, "no-cache" not in cc and seconds(cc, "max-age") != 0


def unsafe(method: str, headers: RequestHeaders) -> bool:
    """Whether a request may change what its URL answers (RFC 9111 4.4): any method
    but GET, HEAD, OPTIONS and TRACE, or one carrying a method override."""
    return method not in SAFE_METHODS or any(name in headers for name in METHOD_OVERRIDES)


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
    (the gateway's ``cache_ttl`` applies). A response with a ``Content-Encoding``
    varies on ``Accept-Encoding`` whether it says so or not.
    """
    if status != 200 or "no-store" in parse_cache_control(request.getlist("cache-control")):
        return None
    cc = parse_cache_control(_getlist(response, "cache-control"))
    if {"no-store", "no-cache", "private"} & cc.keys() or _getlist(response, "set-cookie"):
        return None
    vary = {v.strip().lower() for value in _getlist(response, "vary") for v in value.split(",")}
    if "*" in vary:
        return None
    if _getlist(response, "content-encoding"):
        vary.add("accept-encoding")
    vary.discard("")
    ttl = seconds(cc, "s-maxage")
    return sorted(vary), seconds(cc, "max-age") if ttl is None else ttl


def _values(headers: KeyHeaders, name: str) -> list[str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [value for key, value in pairs if key.lower() == name]


class _Index(BaseModel):
    """What ``index:<url>`` holds: the header names of the key and the generation."""

    vary: list[str]
    generation: str


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
    def _index_key(method: str, url: str) -> str:
        return "index:" + hashlib.sha256(f"{method} {url}".encode()).hexdigest()

    @staticmethod
    def _entry_key(index_key: str, index: _Index, headers: KeyHeaders) -> str:
        values = [[name, _values(headers, name)] for name in index.vary]
        key = json.dumps([index_key, index.generation, values], separators=(",", ":"))
        return "response:" + hashlib.sha256(key.encode()).hexdigest()

    async def _index(self, key: str) -> _Index | None:
        raw = await self._backend.get(key)
        if raw is None:
            return None
        try:
            return _Index.model_validate_json(raw)
        except ValueError:  # not ours (an older layout): as good as absent
            return None

    async def lookup(
        self, method: str, url: str, headers: KeyHeaders, *, keyed: Collection[str] = ()
    ) -> CachedResponse | None:
        """The cached response for a request, or ``None``.

        Args:
            method: The request method.
            url: The path with its query.
            headers: The request headers (see ``KeyHeaders``); the values of the
                names the entries are keyed on (``vary`` when stored) select one.
            keyed: Header names (lower case) the entry must be keyed on to be
                used, such as the credentials the request carries.

        Raises:
            rtkit.errors.Closed: The cache was closed.
        """
        if not self._live:
            await self._ready()
        index_key = self._index_key(method, url)
        try:
            index = await self._index(index_key)
            if index is None or not set(keyed) <= set(index.vary):
                return None
            raw = await self._backend.get(self._entry_key(index_key, index, headers))
        except BackendUnavailable as exc:
            log.warning("response cache lookup failed: %s", exc)
            return None
        return None if raw is None else CachedResponse.model_validate_json(raw)

    async def store(
        self,
        method: str,
        url: str,
        headers: KeyHeaders,
        response: CachedResponse,
        vary: list[str],
        ttl: float,
    ) -> bool:
        """Cache ``response`` for ``ttl`` seconds; return whether it was stored.

        Args:
            method: The request method.
            url: The path with its query.
            headers: The request headers (see ``KeyHeaders``).
            response: What to store.
            vary: The header names (lower case) the entry is keyed on: the
                response's ``Vary`` and whatever else the caller adds; it is
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
        vary = sorted({name.lower() for name in vary})
        index_key = self._index_key(method, url)
        try:
            current = await self._index(index_key)
            index = current
            if index is None or index.vary != vary:
                index = _Index(vary=vary, generation=secrets.token_hex(16))
            await self._backend.set(self._entry_key(index_key, index, headers), value, ttl)
            # An existing index is never written again: a store racing an
            # invalidation cannot bring the old generation back.
            if index is not current:
                await self._backend.set(index_key, index.model_dump_json().encode(), ttl)
        except BackendUnavailable as exc:
            log.warning("response cache store failed: %s", exc)
            return False
        return True

    async def invalidate(self, url: str) -> None:
        """Forget every response stored for ``url`` (GET and HEAD, every variant).

        What the gateway does after a successful unsafe request to ``url`` and to
        the same-origin ``Location`` / ``Content-Location`` it answered with
        (RFC 9111 4.4). A storage failure is logged.

        Raises:
            rtkit.errors.Closed: The cache was closed.
        """
        if not self._live:
            await self._ready()
        try:
            for method in ("GET", "HEAD"):
                await self._backend.delete(self._index_key(method, url))
        except BackendUnavailable as exc:
            log.warning("response cache invalidation failed: %s", exc)
