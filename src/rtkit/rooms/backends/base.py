"""The rooms backend protocol and the data it exchanges with the manager.

A backend keeps memberships keyed by ``(instance_id, sid)``; a connection's
memberships change only through its own instance, or by purging that instance.
``now`` is the injected clock's time, or ``None`` for the backend's own clock.
Besides the methods below, a backend class has ``open(target, **options)``
(see `rtkit.backends`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..._core.leases import LeaseBackend
from ..._core.pages import Page

__all__ = ["Membership", "RoomDeparture", "RoomInfo", "RoomsBackend"]


@dataclass(frozen=True)
class RoomInfo:
    """A room: how many distinct users are in it, and when it was created (epoch seconds)."""

    room_id: str
    user_count: int
    created_at: float


@dataclass(frozen=True)
class RoomDeparture:
    """A connection taken out of a room by a purge.

    ``left`` is true when it was the user's last connection in the room: the
    user left the room with it (announce ``room:user:left``).
    """

    room_id: str
    user_id: str
    sid: str
    left: bool


@dataclass(frozen=True)
class Membership:
    """The rooms one connection (sid) of an instance is in, and its user."""

    user_id: str
    rooms: frozenset[str]


class RoomsBackend(LeaseBackend[RoomDeparture, Membership], Protocol):
    """Where a [`RoomManager`][rtkit.rooms.RoomManager] keeps its data.

    ``purge(instance_id, now, ttl, force)`` renews ``instance_id``'s lease (when
    given) and removes every membership of every expired instance (or of
    ``force`` only), reporting each as a ``RoomDeparture``; it also says
    whether ``instance_id``'s lease was missing before the renewal. Every
    transition also keeps the instance's digest (items
    ``<sid>\x1f<user id>\x1f<room id>``), which ``check`` compares; ``held``
    lists an instance's connections as sid -> ``Membership``.
    """

    async def join(
        self,
        instance_id: str,
        room_id: str,
        user_id: str,
        sid: str,
        now: float | None,
        ttl: float,
        max_rooms: int | None = None,
    ) -> bool:
        """Put a connection in a room and renew the lease; whether the user is new to it.

        Raises ``ValidationError`` when ``sid`` is in rooms as another user, and
        ``TooManyRooms`` when the user is not in ``room_id`` yet and already in
        ``max_rooms`` rooms (through any connection, on any instance); either way
        nothing changes. The check and the join are one atomic step.
        """
        ...

    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        """Take a connection out of a room; whether its user left the room."""
        ...

    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        """Take a connection out of every room; the rooms its user left, sorted."""
        ...

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Membership | None]],
    ) -> list[RoomDeparture]:
        """Make each ``(sid, membership)`` of the instance be in exactly those rooms.

        In order: a sid held for another user leaves all its rooms first;
        ``None`` takes the sid out of every room; a membership takes it out of
        the rooms not listed and puts it in those it misses (no room limit).
        Renews the lease. Returns the memberships removed.
        """
        ...

    async def members(self, room_id: str, cursor: str | None, limit: int) -> Page[str]:
        """A page of a room's user ids, sorted, after ``cursor``."""
        ...

    async def rooms(self, cursor: str | None, limit: int) -> Page[RoomInfo]:
        """A page of rooms sorted by id, after ``cursor``."""
        ...

    async def count(self) -> int:
        """How many rooms have members, in O(1)."""
        ...

    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms a user is in, sorted."""
        ...

    async def is_member(self, room_id: str, user_id: str) -> bool:
        """Whether a user has a connection in a room."""
        ...
