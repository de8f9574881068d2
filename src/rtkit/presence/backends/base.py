"""The presence backend protocol and the data it exchanges with the store.

A backend keeps connections keyed by ``(instance_id, sid)``; a connection can
only be removed through its own instance, or by purging that instance. ``now``
is the injected clock's time, or ``None`` for the backend's own clock (the
system clock in memory, the server's ``TIME`` on Redis). Besides the methods
below, a backend class has ``open(target, **options)`` (see `rtkit.backends`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..._core.leases import LeaseBackend
from ..._core.pages import Page

__all__ = ["OnlineUser", "PresenceBackend", "PresenceCount", "Removed"]


@dataclass(frozen=True)
class OnlineUser:
    """A user who is online: ``joined_at`` is the time of the first connection (epoch seconds)."""

    user_id: str
    username: str | None
    joined_at: float
    connections: int


@dataclass(frozen=True)
class PresenceCount:
    """How many users are online, through how many connections."""

    users: int
    connections: int


@dataclass(frozen=True)
class Removed:
    """What a backend reports for each connection it removed.

    ``offline`` is true when it was the user's last connection; ``time`` is
    when it was removed.
    """

    user_id: str
    sid: str
    offline: bool
    username: str | None
    instance_id: str
    time: float


class PresenceBackend(LeaseBackend[Removed], Protocol):
    """Where a [`PresenceStore`][rtkit.presence.PresenceStore] keeps its data.

    ``purge(instance_id, now, ttl, force)`` renews ``instance_id``'s lease (when
    given) and removes every connection of every expired instance (or of
    ``force`` only), reporting each as a ``Removed``; it also says whether
    ``instance_id``'s lease was missing before the renewal.
    """

    async def connect(
        self,
        instance_id: str,
        user_id: str,
        sid: str,
        username: str | None,
        meta: str | None,
        now: float | None,
        ttl: float,
    ) -> tuple[bool, float]:
        """Add a connection and renew the lease; (the user came online, the time).

        ``meta`` is compact JSON (``"{}"`` drops the stored meta) or ``None``
        (keep it). Raises ``ValidationError`` when ``sid`` is connected as
        another user, or as this user on another instance (nothing changes).
        """
        ...

    async def disconnect(self, instance_id: str, sid: str, now: float | None) -> Removed | None:
        """Remove one connection of ``instance_id`` (``None`` if it has no such sid)."""
        ...

    async def is_online(self, user_id: str) -> bool:
        """Whether the user has a connection."""
        ...

    async def online_users(self, cursor: str | None, limit: int) -> Page[OnlineUser]:
        """A page of online users sorted by user id, after ``cursor``."""
        ...

    async def count(self) -> PresenceCount:
        """Users and connections online, in O(1)."""
        ...

    async def connections(self, user_id: str) -> list[str]:
        """The sids of the user's connections on every instance, sorted."""
        ...

    async def meta(self, instance_id: str, sid: str) -> str | None:
        """The stored meta JSON of one connection."""
        ...
