"""The in-process rooms backend: the executable specification of RoomManager."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Self

from ..._core.leases import ITEM_SEPARATOR, Digest, expired_instances, system_now
from ..._core.memory import shared_state
from ..._core.pages import Page, page_of_sorted
from ..._core.urls import BackendTarget
from ...errors import TooManyRooms, ValidationError
from .base import Membership, RoomDeparture, RoomInfo, RoomsBackend

__all__ = ["MemoryRoomsBackend"]


@dataclass
class _Room:
    created_at: float
    members: dict[str, int] = field(default_factory=dict)  # user id -> connections in the room
    order: list[str] = field(default_factory=list)  # member user ids, sorted


@dataclass
class _Sid:
    user_id: str
    rooms: set[str] = field(default_factory=set)


class _State:
    """Everything every instance sharing this state sees."""

    def __init__(self) -> None:
        self.leases: dict[str, float] = {}  # instance id -> lease expiry
        self.rooms: dict[str, _Room] = {}
        self.order: list[str] = []  # room ids, sorted
        self.users: dict[str, dict[str, int]] = {}  # user id -> room id -> connections
        self.sids: dict[str, dict[str, _Sid]] = {}  # instance id -> sid -> memberships
        self.digests: dict[str, Digest] = {}  # instance id -> digest of its memberships


def _item(sid: str, user_id: str, room_id: str) -> str:
    return ITEM_SEPARATOR.join((sid, user_id, room_id))


class MemoryRoomsBackend(RoomsBackend):
    """Rooms in this process: private, or shared by name (``memory://NAME``).

    ``MemoryRoomsBackend()`` keeps a state of its own; ``open(target)`` shares
    the state of every rooms backend opened on ``memory://NAME`` with the same
    prefix, as several server instances share one Redis.
    """

    def __init__(self) -> None:
        self._s = _State()

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """A backend on ``target``'s state: new for ``memory://``, shared for ``memory://NAME``."""
        backend = cls()
        backend._s = shared_state(target, _State)
        return backend

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
        s = self._s
        at = system_now(now)
        conn = s.sids.get(instance_id, {}).get(sid)
        if conn is not None and conn.user_id != user_id:
            raise ValidationError(f"sid {sid!r} is in rooms as another user")
        mine = s.users.get(user_id, {})
        if max_rooms is not None and room_id not in mine and len(mine) >= max_rooms:
            raise TooManyRooms(f"you are in {len(mine)} rooms already, the most allowed")
        s.leases[instance_id] = at + ttl
        return self._enter(instance_id, room_id, user_id, sid, at)

    def _enter(self, instance_id: str, room_id: str, user_id: str, sid: str, at: float) -> bool:
        """Put a sid (not in rooms as another user) in a room; whether its user is new to it."""
        s = self._s
        conn = s.sids.get(instance_id, {}).get(sid)
        if conn is None:
            conn = s.sids.setdefault(instance_id, {})[sid] = _Sid(user_id)
        if room_id in conn.rooms:
            return False
        conn.rooms.add(room_id)
        s.digests.setdefault(instance_id, Digest()).add(_item(sid, user_id, room_id))
        mine = s.users.setdefault(user_id, {})
        mine[room_id] = mine.get(room_id, 0) + 1
        if mine[room_id] > 1:
            return False
        room = s.rooms.get(room_id)
        if room is None:
            room = s.rooms[room_id] = _Room(at)
            bisect.insort(s.order, room_id)
        room.members[user_id] = 1
        bisect.insort(room.order, user_id)
        return True

    def _drop(self, room_id: str, user_id: str) -> bool:
        """One connection of ``user_id`` leaves ``room_id``; whether the user left it."""
        s = self._s
        mine = s.users[user_id]
        mine[room_id] -= 1
        if mine[room_id]:
            return False
        del mine[room_id]
        if not mine:
            del s.users[user_id]
        room = s.rooms[room_id]
        del room.members[user_id]
        room.order.pop(bisect.bisect_left(room.order, user_id))
        if not room.members:
            del s.rooms[room_id]
            s.order.pop(bisect.bisect_left(s.order, room_id))
        return True

    def _forget_sid(self, instance_id: str, sid: str) -> None:
        conns = self._s.sids[instance_id]
        del conns[sid]
        if not conns:
            del self._s.sids[instance_id]

    def _untrack(self, instance_id: str, sid: str, user_id: str, room_id: str) -> None:
        self._s.digests[instance_id].discard(_item(sid, user_id, room_id))

    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        conn = self._s.sids.get(instance_id, {}).get(sid)
        if conn is None or room_id not in conn.rooms:
            return False
        return self._leave_some(instance_id, sid, conn, {room_id})[0].left

    def _leave_some(
        self, instance_id: str, sid: str, conn: _Sid, rooms: set[str]
    ) -> list[RoomDeparture]:
        gone = []
        for room in sorted(rooms):
            conn.rooms.discard(room)
            self._untrack(instance_id, sid, conn.user_id, room)
            gone.append(RoomDeparture(room, conn.user_id, sid, self._drop(room, conn.user_id)))
        if not conn.rooms:
            self._forget_sid(instance_id, sid)
        return gone

    def _leave_all(self, instance_id: str, sid: str) -> list[RoomDeparture]:
        conn = self._s.sids.get(instance_id, {}).get(sid)
        if conn is None:
            return []
        return self._leave_some(instance_id, sid, conn, set(conn.rooms))

    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        return [d.room_id for d in self._leave_all(instance_id, sid) if d.left]

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        mine = self._s.digests.get(instance_id, Digest()).copy()
        conns = self._s.sids.get(instance_id, {})
        for sid in exclude:
            conn = conns.get(sid)
            if conn is not None:
                for room in conn.rooms:
                    mine.discard(_item(sid, conn.user_id, room))
        return mine.text == digest

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, Membership], int | None]:
        conns = self._s.sids.get(instance_id, {})
        return {sid: Membership(c.user_id, frozenset(c.rooms)) for sid, c in conns.items()}, None

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Membership | None]],
    ) -> list[RoomDeparture]:
        s = self._s
        at = system_now(now)
        s.leases[instance_id] = at + ttl
        removed: list[RoomDeparture] = []
        for sid, want in entries:
            conn = s.sids.get(instance_id, {}).get(sid)
            if conn is not None and (want is None or conn.user_id != want.user_id):
                removed += self._leave_all(instance_id, sid)
                conn = None
            if want is None:
                continue
            if conn is not None:
                removed += self._leave_some(instance_id, sid, conn, conn.rooms - want.rooms)
            for room in sorted(want.rooms):
                self._enter(instance_id, room, want.user_id, sid, at)
        return removed

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[RoomDeparture], bool]:
        s = self._s
        at = system_now(now)
        dead, missing = expired_instances(s.leases, instance_id, at, ttl, force)
        removed: list[RoomDeparture] = []
        for iid in dead:
            for sid, conn in s.sids.pop(iid, {}).items():
                for room in sorted(conn.rooms):
                    removed.append(
                        RoomDeparture(room, conn.user_id, sid, self._drop(room, conn.user_id))
                    )
            s.leases.pop(iid, None)
            s.digests.pop(iid, None)
        return removed, missing

    async def count(self) -> int:
        return len(self._s.order)

    async def members(self, room_id: str, cursor: str | None, limit: int) -> Page[str]:
        room = self._s.rooms.get(room_id)
        return page_of_sorted([] if room is None else room.order, cursor, limit)

    async def rooms(self, cursor: str | None, limit: int) -> Page[RoomInfo]:
        page = page_of_sorted(self._s.order, cursor, limit)
        rooms = self._s.rooms
        items = [RoomInfo(r, len(rooms[r].members), rooms[r].created_at) for r in page.items]
        return Page(items, page.next_cursor)

    async def rooms_of(self, user_id: str) -> list[str]:
        return sorted(self._s.users.get(user_id, {}))

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return room_id in self._s.users.get(user_id, {})

    async def close(self) -> None:
        """Nothing to release in memory."""
