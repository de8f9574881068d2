"""The in-process response cache backend: least recently used entries go first."""

from __future__ import annotations

from collections import OrderedDict
from typing import Self

from ..._core.clock import Clock, SystemClock
from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from ..._core.validate import check_int
from .base import CacheBackend

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "MemoryCacheBackend"]

DEFAULT_MAX_ENTRIES = 1024
"""Entries a memory cache keeps before evicting the least recently used."""

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Bytes a memory cache keeps before evicting the least recently used."""


class _Lru:
    """The entries and their bounds: what ``memory://NAME`` caches share."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = check_int(max_entries, "max_entries")
        self.max_bytes = check_int(max_bytes, "max_bytes")
        self.bytes = 0
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def drop(self, key: str) -> None:
        value, _ = self.entries.pop(key)
        self.bytes -= len(value)

    def put(self, key: str, value: bytes, expires: float) -> None:
        if key in self.entries:
            self.drop(key)
        self.entries[key] = (value, expires)
        self.bytes += len(value)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self.drop(next(iter(self.entries)))


class MemoryCacheBackend(CacheBackend):
    """A cache backend in this process, bounded by entries and by bytes.

    Args:
        clock: Where expiry reads the time (default: the system clock).
        max_entries: Least recently used entries are evicted beyond this many.
        max_bytes: ... or beyond this many bytes in total.

    Raises:
        rtkit.errors.ConfigurationError: A bound that is not a positive int.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._lru = _Lru(max_entries, max_bytes)

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Self:
        """A backend for ``memory://`` (private) or ``memory://NAME`` (shared).

        Caches sharing a name share their entries and the bounds of the first
        one opened.
        """
        backend = cls(clock=target.clock, max_entries=max_entries, max_bytes=max_bytes)
        backend._lru = shared_state(target, lambda: backend._lru)
        return backend

    def __len__(self) -> int:
        return len(self._lru.entries)

    @property
    def size(self) -> int:
        """The bytes held now."""
        return self._lru.bytes

    async def get(self, key: str) -> bytes | None:
        """The value under ``key`` unless it expired (it becomes the most recently used)."""
        item = self._lru.entries.get(key)
        if item is None:
            return None
        if item[1] <= self._clock.monotonic():
            self._lru.drop(key)
            return None
        self._lru.entries.move_to_end(key)
        return item[0]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; evict the least recently used beyond the bounds."""
        self._lru.put(key, value, self._clock.monotonic() + ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""
        if key in self._lru.entries:
            self._lru.drop(key)

    async def close(self) -> None:
        """Nothing to release: the entries go with the last cache that holds them."""
