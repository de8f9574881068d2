"""The Redis rooms backend: every transition is one atomic Lua script (one round trip)."""

from __future__ import annotations

from typing import Any, Self

from ..._core.leases import LeaseScript
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.pages import Page
from ..._core.redis import Keyspace, RedisHandle, redis_unavailable
from ..._core.urls import BackendTarget, check_prefix
from ...errors import TooManyRooms, ValidationError
from .base import Membership, RoomDeparture, RoomInfo, RoomsBackend

__all__ = ["RedisRoomsBackend"]

#: Connections taken out of their rooms per script call when purging an instance.
PURGE_BATCH = 200

#: Connections listed per script call (``HSCAN`` count) when reconciling an instance.
LISTING_BATCH = 500

_SEP = "\x1f"


def _departures(flat: list[Any]) -> list[RoomDeparture]:
    return [
        RoomDeparture(flat[i], flat[i + 1], flat[i + 2], bool(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


def _rooms(joined: str) -> frozenset[str]:
    return frozenset(room for room in joined.split(_SEP) if room)


def _page_start(cursor: str | None) -> str:
    return "-" if cursor is None else "(" + cursor


class RedisRoomsBackend(RoomsBackend):
    """Rooms shared by every instance on one Redis and prefix.

    Every transition is one Lua script (``rooms.lua`` after the lease
    prelude): one round trip, atomic. ``handle`` is closed by ``close()``
    only if it owns its client.
    """

    def __init__(self, handle: RedisHandle, prefix: str) -> None:
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "rooms")
        self._run = LeaseScript(handle.client, self._keys, "rtkit.rooms", "rooms.lua").run

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """A backend on ``target``'s Redis (its borrowed client, or a new one from its URL).

        Args:
            target: Where to open.
            timeout: The bound, in seconds, on connecting and on each round trip.
        """
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, target.prefix)

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
        limit = "" if max_rooms is None else max_rooms
        reply = await self._run("join", now, instance_id, room_id, user_id, sid, repr(ttl), limit)
        if reply == -1:
            raise ValidationError(f"sid {sid!r} is in rooms as another user")
        if isinstance(reply, list):  # {'too_many', rooms the user is in}
            raise TooManyRooms(f"you are in {reply[1]} rooms already, the most allowed")
        return bool(reply)

    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        return bool(await self._run("leave", None, instance_id, room_id, sid))

    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        reply = await self._run("leave_all", None, instance_id, sid)
        return sorted(d.room_id for d in _departures(reply) if d.left)

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        return bool(await self._run("check", None, instance_id, digest, *exclude))

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, Membership], int | None]:
        flat = await self._run("held", None, instance_id, cursor, LISTING_BATCH)
        chunk = {
            str(flat[i]): Membership(str(flat[i + 1]), _rooms(str(flat[i + 2])))
            for i in range(1, len(flat), 3)
        }
        following = int(flat[0])
        return chunk, (None if following == 0 else following)

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Membership | None]],
    ) -> list[RoomDeparture]:
        args: list[str] = []
        for sid, want in entries:
            if want is None:
                args += [sid, "", ""]
            else:
                args += [sid, want.user_id, _SEP.join(sorted(want.rooms))]
        return _departures(await self._run("repair", now, instance_id, repr(ttl), *args))

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[RoomDeparture], bool]:
        removed: list[RoomDeparture] = []
        own = instance_id or ""
        missing = False
        while True:
            reply = await self._run("purge", now, own, repr(ttl), PURGE_BATCH, force or "")
            missing = missing or bool(reply[1])
            removed += _departures(reply[2:])
            if reply[0] == "done":
                return removed, missing
            own = ""  # renewed once per pass

    async def count(self) -> int:
        with redis_unavailable("counting rooms"):
            return int(await self._handle.client.zcard(self._keys.key("rooms")))

    async def members(self, room_id: str, cursor: str | None, limit: int) -> Page[str]:
        with redis_unavailable("reading rooms"):
            found = await self._handle.client.zrange(
                self._keys.key("r", room_id),
                _page_start(cursor),
                "+",
                bylex=True,
                offset=0,
                num=limit + 1,
            )
        ids = [str(u) for u in found]
        if len(ids) > limit:
            return Page(ids[:limit], ids[limit - 1])
        return Page(ids, None)

    async def rooms(self, cursor: str | None, limit: int) -> Page[RoomInfo]:
        reply = await self._run("rooms", None, _page_start(cursor), limit + 1)
        infos = [
            RoomInfo(reply[i], int(reply[i + 1]), float(reply[i + 2]))
            for i in range(0, len(reply), 3)
        ]
        if len(infos) > limit:
            return Page(infos[:limit], infos[limit - 1].room_id)
        return Page(infos, None)

    async def rooms_of(self, user_id: str) -> list[str]:
        with redis_unavailable("reading rooms"):
            rooms = await self._handle.client.hkeys(self._keys.key("u", user_id))
        return sorted(str(r) for r in rooms)

    async def is_member(self, room_id: str, user_id: str) -> bool:
        with redis_unavailable("reading rooms"):
            return bool(await self._handle.client.hexists(self._keys.key("u", user_id), room_id))

    async def close(self) -> None:
        await self._handle.close()
