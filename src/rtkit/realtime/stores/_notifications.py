"""``NotificationStore``: notifications kept for offline users."""

from __future__ import annotations

from typing import ClassVar

from ..._core.clock import Clock, SystemClock
from ..._core.component import Component
from ..._core.validate import check_id
from .._protocol import Notification
from .backends.base import NotificationStoreBackend
from .backends.memory import MemoryNotificationStoreBackend

__all__ = ["NotificationStore"]


class NotificationStore(Component):
    """Keeps the notifications sent to a user who was offline, until the user connects again.

    ``NotificationStore()`` keeps them in this process;
    ``NotificationStore.from_url("redis://...")`` keeps one Redis list per user.
    Both keep the latest ``max_per_user`` (100) notifications of a user, for
    ``ttl`` seconds (a week) after the last one arrived. ``from_url`` takes these
    backend options and, on Redis, ``timeout``.

    Args:
        backend: Where notifications wait (default: a private memory backend).
        clock: Where time comes from (memory; Redis expires lists by its own clock).
    """

    _backends: ClassVar = {
        "memory": "rtkit.realtime.stores.backends.memory:MemoryNotificationStoreBackend",
        "redis": "rtkit.realtime.stores.backends.redis:RedisNotificationStoreBackend",
    }

    def __init__(
        self, backend: NotificationStoreBackend | None = None, *, clock: Clock | None = None
    ) -> None:
        self._backend = backend if backend is not None else MemoryNotificationStoreBackend()
        self._clock: Clock = clock or SystemClock()

    async def _close(self) -> None:
        await self._backend.close()

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its ``to_user_id`` (the oldest goes when full)."""
        await self._ready()
        check_id(notification.to_user_id, "to_user_id")
        await self._backend.push(notification, self._clock.time())

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return every live notification kept for ``user_id``, oldest first.

        Raises:
            rtkit.errors.ValidationError: A bad user id.
        """
        await self._ready()
        check_id(user_id, "user_id")
        return await self._backend.take(user_id, self._clock.time())
