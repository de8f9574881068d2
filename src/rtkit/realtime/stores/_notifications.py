"""``NotificationStore``: notifications kept for offline users."""

from __future__ import annotations

from typing import ClassVar

from ..._core.clock import Clock
from ..._core.component import Component
from ..._core.validate import check_id
from .._protocol import Notification
from .backends.base import NotificationStoreBackend
from .backends.memory import MemoryNotificationStoreBackend

__all__ = ["NotificationStore"]


class NotificationStore(Component):
    """Keeps the notifications sent to a user who was offline, until the user connects again.

    ``NotificationStore()`` keeps them in this process;
    ``NotificationStore.from_url("redis://...")`` keeps one Redis list per user,
    expiring after ``ttl`` seconds (a week). ``from_url`` takes the backend's
    options: ``max_per_user`` (100) and, on Redis, ``ttl`` and ``timeout``.

    Args:
        backend: Where notifications wait (default: a private memory backend).
        clock: Accepted for the shape every component shares; the store keeps no time.
    """

    _backends: ClassVar = {
        "memory": "rtkit.realtime.stores.backends.memory:MemoryNotificationStoreBackend",
        "redis": "rtkit.realtime.stores.backends.redis:RedisNotificationStoreBackend",
    }

    def __init__(
        self, backend: NotificationStoreBackend | None = None, *, clock: Clock | None = None
    ) -> None:
        self._backend = backend if backend is not None else MemoryNotificationStoreBackend()

    async def _close(self) -> None:
        await self._backend.close()

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its ``to_user_id`` (the oldest goes when full)."""
        await self._ready()
        check_id(notification.to_user_id, "to_user_id")
        await self._backend.push(notification)

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return every notification kept for ``user_id``, oldest first.

        Raises:
            rtkit.errors.ValidationError: A bad user id.
        """
        await self._ready()
        check_id(user_id, "user_id")
        return await self._backend.take(user_id)
