"""RoomManager: room membership shared by every server instance."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._backends import DEFAULT_PREFIX
from .._clock import Clock
from .._leases import (
    DEFAULT_TTL,
    LeasedStore,
    check_cursor,
    check_limit,
    check_name,
)
from .._pages import Page

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RoomDeparture", "RoomInfo", "RoomManager", "RoomsBackend"]

logger = logging.getLogger("rtkit.rooms")


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


class RoomsBackend(ABC):
    """Where a :class:`RoomManager` keeps its data (private: memory or Redis).

    ``now`` is the injected clock's time, or ``None`` for the backend's own
    clock. Memberships are keyed by ``(instance_id, sid)``; a connection's
    memberships change only through its own instance, or by purging it.
    """

    @abstractmethod
    async def join(
        self,
        instance_id: str,
        room_id: str,
        user_id: str,
        sid: str,
        now: float | None,
        ttl: float,
    ) -> bool:
        """Put a connection in a room (ValidationError if the sid is another user's)."""

    @abstractmethod
    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        """Take a connection out of a room; whether its user left the room."""

    @abstractmethod
    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        """Take a connection out of every room; the rooms its user left, sorted."""

    @abstractmethod
    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[RoomDeparture], bool]:
        """Renew ``instance_id``'s lease, then remove every expired instance (or ``force``).

        Also says whether ``instance_id``'s lease was missing before the renewal.
        """

    @abstractmethod
    async def members(self, room_id: str, cursor: str | None, limit: int) -> Page[str]:
        """A page of a room's user ids, sorted."""

    @abstractmethod
    async def rooms(self, cursor: str | None, limit: int) -> Page[RoomInfo]:
        """A page of rooms sorted by id."""

    @abstractmethod
    async def count(self) -> int:
        """How many rooms have members (O(1))."""

    @abstractmethod
    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms a user is in, sorted."""

    @abstractmethod
    async def is_member(self, room_id: str, user_id: str) -> bool:
        """Whether a user has a connection in a room."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections to the backend."""


def settle_room_departures(removed: list[RoomDeparture]) -> list[RoomDeparture]:
    """Order a purge's removals by (room, user, sid) and report ``left`` on each user's last.

    Backends remove a dead instance's memberships in whatever order they find
    them; this makes the report the same everywhere.
    """
    ordered = sorted(removed, key=lambda r: (r.room_id, r.user_id, r.sid))
    left = {(r.room_id, r.user_id) for r in ordered if r.left}
    last = {(r.room_id, r.user_id): i for i, r in enumerate(ordered)}
    return [
        RoomDeparture(
            r.room_id,
            r.user_id,
            r.sid,
            (r.room_id, r.user_id) in left and last[(r.room_id, r.user_id)] == i,
        )
        for i, r in enumerate(ordered)
    ]


class RoomManager(LeasedStore[RoomDeparture]):
    """Room membership shared by every server instance.

    Membership is per connection (sid) and reported per user: a user with two
    tabs in a room leaves it when the last tab leaves. Empty rooms disappear.

    Each manager is one server instance (``instance_id``, normally the same as
    the process's PresenceStore) holding a lease; :meth:`start` heartbeats it
    every ``ttl / 3`` seconds and purges expired instances, so a crashed
    instance's memberships disappear at most ``2 * ttl`` seconds after its last
    heartbeat. :meth:`close` removes this instance's memberships at once.

    Args:
        url: ``memory://`` (private), ``memory://<name>`` (shared by every
            manager with that name in this process) or a Redis URL.
        prefix: Redis key prefix.
        instance_id: this server instance (letters, digits, ``._-``); a new
            UUIDv7 by default.
        ttl: lease time-to-live in seconds.
        redis: a Redis client to borrow instead of making one from ``url``.
        clock: where time comes from. On Redis, without a clock the server's
            ``TIME`` is used.

    Example:
        ```python
        async with RoomManager.from_url("redis://localhost:6379") as rooms:
            if await rooms.join("lobby", "42", sid):
                ...  # announce room:user:joined
        ```
    """

    _component = "rooms"

    def __init__(
        self,
        url: str = "memory://",
        *,
        prefix: str = DEFAULT_PREFIX,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        redis: aioredis.Redis | None = None,
        clock: Clock | None = None,
    ) -> None:
        kind = self._configure(
            url, prefix=prefix, instance_id=instance_id, ttl=ttl, redis=redis, clock=clock
        )
        self._backend: RoomsBackend
        if kind == "memory":
            from .memory import MemoryRoomsBackend

            self._backend = MemoryRoomsBackend(url, prefix)
        else:
            from .redis import RedisRoomsBackend

            self._backend = RedisRoomsBackend(url, prefix, redis)

    @classmethod
    def from_url(
        cls,
        url: str = "memory://",
        *,
        prefix: str = DEFAULT_PREFIX,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        redis: aioredis.Redis | None = None,
        clock: Clock | None = None,
    ) -> RoomManager:
        """Make a manager on the backend that ``url`` names (see the class for the arguments)."""
        return cls(url, prefix=prefix, instance_id=instance_id, ttl=ttl, redis=redis, clock=clock)

    async def join(self, room_id: str, user_id: str, sid: str) -> bool:
        """Put connection ``sid`` of ``user_id`` in ``room_id`` (created if new).

        Joining again with the same sid is a no-op.

        Returns:
            True iff the user is new to the room (announce ``room:user:joined``).

        Raises:
            ValidationError: a bad id, or ``sid`` is in rooms as another user
                (nothing changes).
        """
        check_name(room_id, "room_id")
        check_name(user_id, "user_id")
        check_name(sid, "sid")
        new = await self._backend.join(
            self.instance_id, room_id, user_id, sid, self._now(), self.ttl
        )
        self._leased = True
        return new

    async def leave(self, room_id: str, sid: str) -> bool:
        """Take connection ``sid`` (of this instance) out of ``room_id``.

        Returns:
            True iff its user left the room completely (it was their last
            connection in it); False also when the sid was not in the room.
        """
        check_name(room_id, "room_id")
        check_name(sid, "sid")
        return await self._backend.leave(self.instance_id, room_id, sid)

    async def leave_all(self, sid: str) -> list[str]:
        """Take connection ``sid`` (of this instance) out of every room: call on disconnect.

        Returns:
            The ids of the rooms its user left completely, sorted.
        """
        return await self._backend.leave_all(self.instance_id, check_name(sid, "sid"))

    async def members(self, room_id: str, cursor: str | None = None, limit: int = 100) -> Page[str]:
        """One page of the user ids in ``room_id``, sorted (an empty page for no such room)."""
        return await self._backend.members(
            check_name(room_id, "room_id"), check_cursor(cursor), check_limit(limit)
        )

    async def rooms(self, cursor: str | None = None, limit: int = 100) -> Page[RoomInfo]:
        """One page of the rooms that have members, sorted by room id."""
        return await self._backend.rooms(check_cursor(cursor), check_limit(limit))

    async def count(self) -> int:
        """How many rooms have members, on every instance (O(1))."""
        return await self._backend.count()

    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms ``user_id`` is in through any connection, sorted."""
        return await self._backend.rooms_of(check_name(user_id, "user_id"))

    async def is_member(self, room_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is in ``room_id`` through any connection."""
        return await self._backend.is_member(
            check_name(room_id, "room_id"), check_name(user_id, "user_id")
        )

    async def purge_expired(self) -> list[RoomDeparture]:
        """Run one purge pass now: renew this instance's lease, remove expired instances.

        The janitor started by :meth:`start` calls this every ``ttl / 3`` seconds.

        Returns:
            The memberships removed, sorted by room, user and sid.
        """
        removed = settle_room_departures(await self._purge_pass())
        if removed:
            logger.info("rooms: purged %d membership(s) of expired instances", len(removed))
        return removed
