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

__all__ = ["Holding", "OnlineUser", "PresenceBackend", "PresenceCount", "Removed"]


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


@dataclass(frozen=True)
class Holding:
    """What an instance holds for one of its connections, as ``repair`` puts it back.

    ``username`` is the latest the instance was given for the user (set only
    if the user has none); ``meta`` is compact JSON or ``None``.
    """

    user_id: str
    username: str | None
    meta: str | None


class PresenceBackend(LeaseBackend[Removed, str], Protocol):
    """Where a [`PresenceStore`][rtkit.presence.PresenceStore] keeps its data.

    ``purge(instance_id, now, ttl, force)`` renews ``instance_id``'s lease (when
    given) and removes every connection of every expired instance (or of
    ``force`` only), reporting each as a ``Removed``; it also says whether
    ``instance_id``'s lease was missing before the renewal. Every transition
    also keeps the instance's digest (items ``<sid>\x1f<user id>``), which
    ``check`` compares; ``held`` lists an instance's connections as sid ->
    user id.
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

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Holding | None]],
    ) -> tuple[list[Removed], list[str], float]:
        """Make the backend hold exactly ``holding`` for each ``(sid, holding)`` of the instance.

        In order: a sid held for another user is removed first; ``None``
        removes the sid; a holding adds the sid when it is missing (not when
        another instance holds it for that user), sets the username when the
        user has none, and sets (or drops) the meta. Renews the lease.
        Returns what was removed, the users who came online (in order), and
        the time.
        """
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
