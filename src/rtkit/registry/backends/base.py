"""What a [`ServiceRegistry`][rtkit.registry.ServiceRegistry] needs of its backend.

A backend stores *records* (one per live instance) and answers four questions:
upsert a record with a time-to-live, remove one, list the live ones of a
service, and count the live ones of every service; each of them first removes
the instances that expired. It also announces changes, so that ``watch()``
streams wake up. Everything else (validation, heartbeats, load balancing,
watching) lives in the registry, once.

Time: a backend reads the clock it was opened with (``target.clock``); without
one, the memory backend uses the system clock and the Redis backend the Redis
server's ``TIME``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .._models import Record, ServiceInstance

__all__ = ["ChangeWaiter", "RegistryBackend"]


class ChangeWaiter(Protocol):
    """Waits for the next change of one service."""

    async def wait(self, timeout: float) -> None:
        """Return when a change was announced, or after ``timeout`` seconds."""
        ...


class RegistryBackend(Protocol):
    """Where a service registry keeps its instances (memory, Redis, ...)."""

    async def upsert(self, record: Record, ttl: float) -> None:
        """Add ``record`` or extend its life to now + ``ttl`` (keeping ``registered_at``).

        Announces a change when the instance is new.
        """
        ...

    async def remove(self, name: str, instance_id: str) -> bool:
        """Delete one instance of service ``name``; say whether it was live."""
        ...

    async def live(self, name: str) -> list[ServiceInstance]:
        """Prune the expired instances of ``name`` and return the live ones."""
        ...

    async def counts(self) -> dict[str, int]:
        """Prune every service; return the live count of each non-empty one."""
        ...

    def changes(self, name: str) -> AbstractAsyncContextManager[ChangeWaiter]:
        """Listen to the changes of service ``name`` while the context is open."""
        ...

    async def close(self) -> None:
        """Release the backend's connections (a borrowed Redis client stays open)."""
        ...
