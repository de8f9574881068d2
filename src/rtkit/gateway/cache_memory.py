"""The in-process response cache: least recently used entries go first."""

from __future__ import annotations

from collections import OrderedDict

from .._clock import Clock, SystemClock
from ..errors import ConfigurationError
from .cache import DEFAULT_MAX_ENTRY_BYTES, ResponseCache

__all__ = ["MemoryResponseCache"]


class MemoryResponseCache(ResponseCache):
    """A `ResponseCache` in memory, bounded by entries and bytes."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_entries: int = 1024,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        super().__init__(max_entry_bytes=max_entry_bytes)
        if max_entries < 1 or max_bytes < 1:
            raise ConfigurationError("max_entries and max_bytes must be positive")
        self._clock: Clock = clock or SystemClock()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The bytes held now."""
        return self._bytes

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)

    async def _get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= self._clock.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return item[0]

    async def _set(self, key: str, value: bytes, ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, self._clock.monotonic() + ttl)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._bytes = 0
