"""RoomManager: room membership shared by every server instance."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from .._core.clock import Clock
from .._core.leased import EventPublisher, LeasedStore
from .._core.leases import DEFAULT_TTL, ITEM_SEPARATOR
from .._core.pages import Page
from .._core.validate import check_cursor, check_id, check_int, check_limit
from ..errors import BackendUnavailable, ValidationError
from .backends.base import Membership, RoomDeparture, RoomInfo, RoomsBackend
from .backends.memory import MemoryRoomsBackend

__all__ = ["RoomEvent", "RoomManager"]

logger = logging.getLogger("rtkit.rooms")


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


class RoomEvent(BaseModel):
    """The payload of the ``rooms.left`` event: a purge took the user out of a room.

    Published when a crashed instance's memberships are purged and the user
    had no other connection in the room (announce ``room:user:left``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    room_id: str
    user_id: str


def _item(sid: str, user_id: str, room_id: str) -> str:
    return ITEM_SEPARATOR.join((sid, user_id, room_id))


class RoomManager(LeasedStore[RoomDeparture, RoomDeparture, Membership, Membership]):
    """Room membership shared by every server instance.

    Membership is per connection (sid) and reported per user: a user with two
    tabs in a room leaves it when the last tab leaves. Empty rooms disappear.

    Each manager is one server instance (``instance_id``, normally the same as
    the process's [`PresenceStore`][rtkit.presence.PresenceStore]) holding a
    lease. Started (by ``start()``, ``async with`` or its first operation), it
    renews the lease every ``ttl / 3`` seconds and purges expired instances, so
    a crashed instance's memberships disappear at most ``ttl + ttl / 3``
    (less than ``2 * ttl``) seconds after its last heartbeat. ``close()`` removes this
    instance's memberships at once; afterwards every operation raises
    [`Closed`][rtkit.errors.Closed] (``instance_id`` and ``ttl`` stay readable).

    The instance is the authority on its own connections' memberships: the
    manager keeps them locally too, and its heartbeat puts the backend right
    when they disagree (a call that timed out but ran after all, a leave that
    never arrived, a backend that lost its data), at most ``ttl / 3`` seconds
    after the backend answers again.

    Args:
        backend: Where the data lives; ``None`` for a private memory backend.
            `RoomManager.from_url` opens one from a URL: ``memory://``
            (private), ``memory://NAME`` (shared by every manager opened with
            that name and prefix in this process) or a Redis URL (option
            ``timeout``: the bound on each round trip, 5 s by default).
        clock: Where time comes from. On Redis, without a clock the server's
            ``TIME`` is used.
        instance_id: This server instance (a name of at most 64 characters,
            without ``:``); a new UUIDv7 by default.
        ttl: Seconds a lease lives without a heartbeat (30 by default).
        bus: Where to publish ``rooms.left`` (payload [`RoomEvent`][rtkit.rooms.RoomEvent])
            for each user a purge of crashed instances took out of a room, so that
            whichever instance purges, the room hears of it.

    Attributes:
        instance_id: This server instance's id (readable after ``close()``).
        ttl: The lease time-to-live in seconds (readable after ``close()``).

    Raises:
        rtkit.errors.ConfigurationError: A bad ``instance_id`` or ``ttl``.

    Example:
        ```python
        async with RoomManager.from_url("redis://localhost:6379/0") as rooms:
            if await rooms.join("lobby", "42", "sid-a"):
                ...  # announce room:user:joined
        ```
    """

    _component = "rooms"
    _backends = {
        "memory": "rtkit.rooms.backends.memory:MemoryRoomsBackend",
        "redis": "rtkit.rooms.backends.redis:RedisRoomsBackend",
    }
    _backend: RoomsBackend

    def __init__(
        self,
        backend: RoomsBackend | None = None,
        *,
        clock: Clock | None = None,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        bus: EventPublisher | None = None,
    ) -> None:
        self._configure(
            backend if backend is not None else MemoryRoomsBackend(),
            instance_id=instance_id,
            ttl=ttl,
            clock=clock,
            bus=bus,
        )

    async def join(
        self, room_id: str, user_id: str, sid: str, *, max_rooms: int | None = None
    ) -> bool:
        """Put connection ``sid`` of ``user_id`` in ``room_id`` (created if new).

        Joining again with the same sid is a no-op. With ``max_rooms``, a user
        already in that many rooms (through any connection, on any instance)
        cannot join another one: the check and the join are one atomic step,
        so concurrent joins never go past the limit.

        Returns:
            True iff the user is new to the room (announce ``room:user:joined``).

        Raises:
            rtkit.errors.ValidationError: A bad id or ``max_rooms``, or ``sid``
                is in rooms as another user (nothing changes).
            rtkit.errors.TooManyRooms: The user is in ``max_rooms`` rooms
                already and not in ``room_id`` (nothing changes).
            rtkit.errors.BackendUnavailable: The backend did not answer in time:
                the membership is not held, and whatever reached the backend is
                undone by the heartbeat.
            rtkit.errors.Closed: The manager was closed.
        """
        if not self._live:
            await self._ready()
        check_id(room_id, "room_id")
        check_id(user_id, "user_id")
        check_id(sid, "sid")
        if max_rooms is not None:
            check_int(max_rooms, "max_rooms", minimum=0, error=ValidationError)
        async with self._transition(sid):
            new = await self._backend.join(
                self.instance_id, room_id, user_id, sid, self._now(), self.ttl, max_rooms
            )
            if self._arrived(sid):
                self._enter(sid, user_id, room_id)
        return new

    async def leave(self, room_id: str, sid: str) -> bool:
        """Take connection ``sid`` (of this instance) out of ``room_id``.

        The instance stops holding the membership at once. When the backend
        does not answer in time this logs a warning and returns False: the
        heartbeat removes it there (publishing ``rooms.left``).

        Returns:
            True iff its user left the room completely (it was their last
            connection in it); False also when the sid was not in the room.
        """
        if not self._live:
            await self._ready()
        check_id(room_id, "room_id")
        check_id(sid, "sid")
        try:
            async with self._transition(sid):
                self._exit(sid, room_id)
                return await self._backend.leave(self.instance_id, room_id, sid)
        except BackendUnavailable as exc:
            self._pending(sid, exc)
            return False

    async def leave_all(self, sid: str) -> list[str]:
        """Take connection ``sid`` (of this instance) out of every room: call on disconnect.

        The instance stops holding its memberships at once. When the backend
        does not answer in time this logs a warning and returns ``[]``: the
        heartbeat removes them there (publishing ``rooms.left``).

        Returns:
            The ids of the rooms its user left completely, sorted.
        """
        if not self._live:
            await self._ready()
        check_id(sid, "sid")
        try:
            async with self._transition(sid):
                self._depart(sid)
                return await self._backend.leave_all(self.instance_id, sid)
        except BackendUnavailable as exc:
            self._pending(sid, exc)
            return []

    async def members(self, room_id: str, cursor: str | None = None, limit: int = 100) -> Page[str]:
        """One page of the user ids in ``room_id``, sorted (an empty page for no such room).

        Pass the returned ``next_cursor`` as ``cursor`` for the next page;
        ``limit`` is 1 to 1000.
        """
        await self._ready()
        return await self._backend.members(
            check_id(room_id, "room_id"), check_cursor(cursor), check_limit(limit)
        )

    async def rooms(self, cursor: str | None = None, limit: int = 100) -> Page[RoomInfo]:
        """One page of the rooms that have members, sorted by room id."""
        await self._ready()
        return await self._backend.rooms(check_cursor(cursor), check_limit(limit))

    async def count(self) -> int:
        """How many rooms have members, on every instance (O(1))."""
        await self._ready()
        return await self._backend.count()

    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms ``user_id`` is in through any connection, sorted."""
        if not self._live:
            await self._ready()
        return await self._backend.rooms_of(check_id(user_id, "user_id"))

    async def is_member(self, room_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is in ``room_id`` through any connection."""
        if not self._live:
            await self._ready()
        return await self._backend.is_member(
            check_id(room_id, "room_id"), check_id(user_id, "user_id")
        )

    async def purge_expired(self) -> list[RoomDeparture]:
        """Run one purge pass now: renew this instance's lease, remove expired instances.

        The janitor does this every ``ttl / 3`` seconds; on a manager that has
        not started yet, the pass that starts it is this one.

        Returns:
            The memberships removed, sorted by room, user and sid.

        Raises:
            rtkit.errors.Closed: The manager was closed.
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        return await super().purge_expired()

    # -- what this instance holds (see LeasedStore)

    def _enter(self, sid: str, user_id: str, room_id: str) -> None:
        """A join succeeded: hold the membership (the digest changes by one item)."""
        held = self._held.get(sid)
        if held is None or held.user_id != user_id:
            self._hold(sid, Membership(user_id, frozenset((room_id,))))
        elif room_id not in held.rooms:
            self._held[sid] = Membership(user_id, held.rooms | {room_id})
            self._digest.add(_item(sid, user_id, room_id))

    def _exit(self, sid: str, room_id: str) -> None:
        held = self._held.get(sid)
        if held is None or room_id not in held.rooms:
            return
        if len(held.rooms) == 1:
            self._hold(sid, None)
            return
        self._held[sid] = Membership(held.user_id, held.rooms - {room_id})
        self._digest.discard(_item(sid, held.user_id, room_id))

    def _items(self, sid: str, held: Membership) -> Iterable[str]:
        return (_item(sid, held.user_id, room) for room in held.rooms)

    def _matches(self, view: Membership, held: Membership) -> bool:
        return view == held

    async def _restore(self, entries: list[tuple[str, Membership | None]]) -> list[RoomDeparture]:
        return await self._backend.repair(self.instance_id, self._now(), self.ttl, entries)

    async def _beat(self) -> list[RoomDeparture]:
        removed = settle_room_departures(await self._purge_pass())
        if removed:
            logger.info(
                "rooms: removed %d membership(s) of expired instances or not held", len(removed)
            )
        for gone in removed:
            if gone.left:
                event = RoomEvent(room_id=gone.room_id, user_id=gone.user_id)
                await self._publish("rooms.left", event.model_dump())
        return removed
