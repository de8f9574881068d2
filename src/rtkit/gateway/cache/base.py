"""The response cache backend protocol: bytes under a key, each with a time-to-live.

A backend knows nothing of HTTP: [`ResponseCache`][rtkit.gateway.ResponseCache]
decides what is cached, under which key and for how long, and stores it here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["CacheBackend"]


@runtime_checkable
class CacheBackend(Protocol):
    """What a response cache backend implements.

    Besides these methods a backend class has ``open(target, **options)``, a
    class method that makes it for a [`BackendTarget`][rtkit.backends.BackendTarget].
    """

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` if absent or expired.

        Raises:
            rtkit.errors.BackendUnavailable: The storage did not answer in time.
        """
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (more than 0).

        Raises:
            rtkit.errors.BackendUnavailable: The storage did not answer in time.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens if it is absent).

        Raises:
            rtkit.errors.BackendUnavailable: The storage did not answer in time.
        """
        ...

    async def close(self) -> None:
        """Release what the backend created (a borrowed Redis client stays open)."""
        ...
