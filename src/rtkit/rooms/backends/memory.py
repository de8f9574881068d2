"""The in-process rooms backend: the executable specification of RoomManager."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Self

from ..._core.leases import expired_instances, system_now
from ..._core.memory import shared_state
from ..._core.pages import Page, page_of_sorted
from ..._core.urls import BackendTarget
from ...errors import ValidationError
from .base import RoomDeparture, RoomInfo, RoomsBackend

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
    ) -> bool:
        s = self._s
        at = system_now(now)
        conn = s.sids.get(instance_id, {}).get(sid)
        if conn is not None and conn.user_id != user_id:
            raise ValidationError(f"sid {sid!r} is in rooms as another user")
        s.leases[instance_id] = at + ttl
        if conn is None:
            conn = s.sids.setdefault(instance_id, {})[sid] = _Sid(user_id)
        if room_id in conn.rooms:
            return False
        conn.rooms.add(room_id)
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

    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        conn = self._s.sids.get(instance_id, {}).get(sid)
        if conn is None or room_id not in conn.rooms:
            return False
        conn.rooms.discard(room_id)
        if not conn.rooms:
            self._forget_sid(instance_id, sid)
        return self._drop(room_id, conn.user_id)

    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        conn = self._s.sids.get(instance_id, {}).get(sid)
        if conn is None:
            return []
        self._forget_sid(instance_id, sid)
        return sorted(room for room in conn.rooms if self._drop(room, conn.user_id))

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
