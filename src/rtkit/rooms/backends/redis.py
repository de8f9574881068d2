"""The Redis rooms backend: every transition is one atomic Lua script on one bucket.

Rooms spread over ``BUCKETS`` (32) buckets by a stable hash of their id; each bucket is
one hash tag, ``{<prefix>rooms:<bucket>}``, so on a Redis Cluster the buckets (and the
load) spread over every master. A room lives whole in its bucket (members, creation
time, the connections in it), so joins, leaves, member pages and membership tests are
one call on one bucket. What spans rooms (the count, a page of rooms, a user's rooms,
a connection leaving all its rooms, an instance's lease, digest, listing and purge) is
one call or read per bucket, pipelined: one round trip on one Redis, one per master (in
parallel) on a cluster. See ``rooms.lua`` for the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Self

from ..._core.leases import BUCKETS, BucketScript, bucket_of, digest_sum
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.pages import Page
from ..._core.redis import Keyspace, RedisHandle, redis_unavailable
from ..._core.urls import BackendTarget, check_prefix
from ...errors import BackendUnavailable, TooManyRooms, ValidationError
from .base import Membership, RoomDeparture, RoomInfo, RoomsBackend

__all__ = ["RedisRoomsBackend"]

#: Connections taken out of their rooms per script call when purging an instance.
PURGE_BATCH = 200

_SEP = "\x1f"


def _departures(flat: list[Any]) -> list[RoomDeparture]:
    return [
        RoomDeparture(flat[i], flat[i + 1], flat[i + 2], bool(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


def _range(entity: str) -> tuple[str, str]:
    """The ``BYLEX`` bounds of the members ``<entity>\\x1f...`` (ids have no control chars)."""
    return "[" + entity + _SEP, "(" + entity + "\x20"


class RedisRoomsBackend(RoomsBackend):
    """Rooms shared by every instance on one Redis (or Cluster, or Sentinel) and prefix.

    Every transition is one Lua script (``rooms.lua`` after the lease prelude)
    on the bucket of its room: one round trip, atomic. ``handle`` is closed by
    ``close()`` only if it owns its client.

    A join with ``max_rooms`` takes a short lock under the user's own tag, counts
    the user's rooms in the other buckets (one pipelined round trip), and runs the
    join's script, which adds those of its own bucket: three round trips more than
    an unlimited join, and concurrent limited joins of one user wait for each other,
    so they never pass the limit.
    """

    def __init__(self, handle: RedisHandle, prefix: str) -> None:
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "rooms")
        self._lua = BucketScript(handle.client, self._keys, "rtkit.rooms", "rooms.lua")
        # (instance, sid) -> the user this backend last put it in a room for. Only a hint:
        # a join as another user checks every other bucket first (one pipelined round trip).
        self._users: dict[tuple[str, str], str] = {}
        # ...and the rooms it put it in (an entry goes when the last of them is left)
        self._joined: dict[tuple[str, str], set[str]] = {}
        self._locks: dict[str, list[Any]] = {}  # user id -> [asyncio.Lock, waiters]

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """A backend on ``target``'s Redis (its borrowed client, or a new one from its URL).

        Args:
            target: Where to open.
            timeout: The bound, in seconds, on connecting and on each round trip.
        """
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, target.prefix)

    def _keys_of(self, bucket: int, instance_id: str) -> list[str]:
        """KEYS[1..9] of a call on ``bucket`` about ``instance_id``."""
        key = self._lua.key
        return [
            *self._lua.lease_keys(bucket),
            *(key(bucket, part) for part in ("r", "c", "m", "w", "k")),
            key(bucket, "i", instance_id),
            key(bucket, "s", instance_id),
        ]

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
        b = bucket_of(room_id)
        before = self._users.get((instance_id, sid))
        if (
            before is not None
            and before != user_id
            and await self._held_elsewhere(instance_id, sid, b)
        ):
            raise ValidationError(f"sid {sid!r} is in rooms as another user")
        where = (instance_id, sid)
        previous = set(self._joined.get(where, ()))
        self._users[where] = user_id  # before the call: its outcome may stay unknown
        self._joined[where] = (previous if before == user_id else set()) | {room_id}
        if max_rooms is None:
            reply = await self._join(b, instance_id, room_id, user_id, sid, now, ttl, "", 0)
        else:
            async with self._user_lock(user_id):
                low, high = _range(user_id)

                def build(pipe: Any) -> None:
                    for other in range(BUCKETS):
                        if other != b:
                            pipe.zlexcount(self._lua.key(other, "w"), low, high)

                others = sum(int(n) for n in await self._lua.read(build))
                reply = await self._join(
                    b, instance_id, room_id, user_id, sid, now, ttl, max_rooms, others
                )
        if reply == -1 or isinstance(reply, list):  # refused: nothing changed
            if before is None or not previous:
                self._forget(where)
            else:
                self._users[where], self._joined[where] = before, previous
        if reply == -1:
            raise ValidationError(f"sid {sid!r} is in rooms as another user")
        if isinstance(reply, list):  # {'too_many', rooms the user is in}
            raise TooManyRooms(f"you are in {reply[1]} rooms already, the most allowed")
        return bool(reply)

    def _forget(self, where: tuple[str, str]) -> None:
        self._users.pop(where, None)
        self._joined.pop(where, None)

    async def _held_elsewhere(self, instance_id: str, sid: str, skip: int) -> bool:
        """Whether ``sid`` of ``instance_id`` is in rooms of a bucket other than ``skip``."""

        def build(pipe: Any) -> None:
            for b in range(BUCKETS):
                if b != skip:
                    pipe.hexists(self._lua.key(b, "i", instance_id), sid)

        return any(await self._lua.read(build))

    async def _join(
        self,
        b: int,
        instance_id: str,
        room_id: str,
        user_id: str,
        sid: str,
        now: float | None,
        ttl: float,
        limit: int | str,
        others: int,
    ) -> Any:
        return await self._lua.run(
            self._keys_of(b, instance_id),
            "join",
            now,
            instance_id,
            room_id,
            user_id,
            sid,
            repr(ttl),
            limit,
            others,
        )

    @contextlib.asynccontextmanager
    async def _user_lock(self, user_id: str) -> AsyncIterator[None]:
        """One limited join of ``user_id`` at a time, on every instance: the user's rooms
        are counted over every bucket, then the join's script counts its own bucket again.

        A short Redis lock under the user's own tag, waited for at most the round-trip
        bound (``BackendUnavailable`` then); it expires by itself after twice that if its
        holder dies.
        """
        timeout = self._handle.timeout
        local = self._locks.setdefault(user_id, [asyncio.Lock(), 0])
        local[1] += 1
        try:
            # the joins of this process queue here: only one of them polls Redis
            async with asyncio.timeout(timeout):
                await local[0].acquire()
        except TimeoutError:
            raise BackendUnavailable(
                f"other joins of user {user_id!r} held its rooms lock for {timeout:g} s"
            ) from None
        finally:
            local[1] -= 1
        try:
            async with self._redis_lock(user_id, timeout):
                yield
        finally:
            local[0].release()
            if not local[1] and not local[0].locked():
                self._locks.pop(user_id, None)

    @contextlib.asynccontextmanager
    async def _redis_lock(self, user_id: str, timeout: float) -> AsyncIterator[None]:
        lock = self._handle.client.lock(
            self._keys.entity_key("user:" + user_id, "lock"),
            timeout=2 * timeout,
            sleep=0.005,
            blocking_timeout=timeout,
        )
        with redis_unavailable("locking the user's rooms"):
            taken = await lock.acquire()
        if not taken:
            raise BackendUnavailable(
                f"another join of user {user_id!r} held its rooms lock for {timeout:g} s"
            )
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
                await lock.release()

    async def leave(self, instance_id: str, room_id: str, sid: str) -> bool:
        b = bucket_of(room_id)
        joined = self._joined.get((instance_id, sid))
        if joined is not None:
            joined.discard(room_id)
            if not joined:
                self._forget((instance_id, sid))
        return bool(
            await self._lua.run(
                self._keys_of(b, instance_id), "leave", None, instance_id, room_id, sid
            )
        )

    async def leave_all(self, instance_id: str, sid: str) -> list[str]:
        calls = [(self._keys_of(b, instance_id), [instance_id, sid]) for b in range(BUCKETS)]
        self._forget((instance_id, sid))
        replies = await self._lua.run_many("leave_all", None, calls)
        return sorted(d.room_id for reply in replies for d in _departures(reply) if d.left)

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        calls = [(self._keys_of(b, instance_id), [instance_id, *exclude]) for b in range(BUCKETS)]
        return digest_sum(await self._lua.run_many("check", None, calls)) == digest

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, Membership], int | None]:
        def build(pipe: Any) -> None:
            for b in range(BUCKETS):
                pipe.hgetall(self._lua.key(b, "i", instance_id))
                pipe.hgetall(self._lua.key(b, "s", instance_id))

        found = await self._lua.read(build)
        users: dict[str, str] = {}
        rooms: dict[str, set[str]] = {}
        for owners, joined in zip(found[0::2], found[1::2], strict=True):
            for sid, user_id in owners.items():
                users[sid] = user_id
                rooms.setdefault(sid, set()).update(r for r in joined.get(sid, "").split(_SEP) if r)
        chunk = {sid: Membership(users[sid], frozenset(rooms[sid])) for sid in users}
        return chunk, None

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Membership | None]],
    ) -> list[RoomDeparture]:
        """Every bucket in one pipelined round trip, each given the rooms of its own."""
        per_bucket: list[list[str]] = [[instance_id, repr(ttl)] for _ in range(BUCKETS)]
        for sid, want in entries:
            mine: list[list[str]] = [[] for _ in range(BUCKETS)]
            if want is not None:
                for room in sorted(want.rooms):
                    mine[bucket_of(room)].append(room)
            user = "" if want is None else want.user_id
            for b in range(BUCKETS):
                per_bucket[b] += [sid, user, _SEP.join(mine[b])]
        calls = [(self._keys_of(b, instance_id), args) for b, args in enumerate(per_bucket)]
        for sid, want in entries:
            if want is None or not want.rooms:
                self._forget((instance_id, sid))
            else:
                self._users[(instance_id, sid)] = want.user_id
                self._joined[(instance_id, sid)] = set(want.rooms)
        replies = await self._lua.run_many("repair", now, calls)
        return [d for reply in replies for d in _departures(reply)]

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[RoomDeparture], bool]:
        forced = "" if force is None else "1"

        def call(b: int, target: str) -> tuple[list[str], list[Any]]:
            return self._keys_of(b, target), [target, forced, PURGE_BATCH]

        replies, missing = await self._lua.purge(call, instance_id, now, ttl, force)
        removed = [d for reply in replies for d in _departures(reply[2:])]
        if force is not None:
            for where in [w for w in self._users if w[0] == force]:
                self._forget(where)
        return removed, missing

    async def count(self) -> int:
        def build(pipe: Any) -> None:
            for b in range(BUCKETS):
                pipe.zcard(self._lua.key(b, "r"))

        return sum(int(n) for n in await self._lua.read(build))

    async def members(self, room_id: str, cursor: str | None, limit: int) -> Page[str]:
        low, high = _range(room_id)
        start = low if cursor is None else "(" + room_id + _SEP + cursor
        key = self._lua.key(bucket_of(room_id), "m")
        (found,) = await self._lua.read(
            lambda pipe: pipe.zrange(key, start, high, bylex=True, offset=0, num=limit + 1)
        )
        ids = [str(m)[len(room_id) + 1 :] for m in found]
        if len(ids) > limit:
            return Page(ids[:limit], ids[limit - 1])
        return Page(ids, None)

    async def rooms(self, cursor: str | None, limit: int) -> Page[RoomInfo]:
        """``limit + 1`` rooms from every bucket (one pipelined round trip), merged."""
        start = "-" if cursor is None else "(" + cursor
        calls = [(self._keys_of(b, ""), [start, limit + 1]) for b in range(BUCKETS)]
        replies = await self._lua.run_many("rooms", None, calls)
        infos = sorted(
            (
                RoomInfo(reply[i], int(reply[i + 1]), float(reply[i + 2]))
                for reply in replies
                for i in range(0, len(reply), 3)
            ),
            key=lambda info: info.room_id,
        )[: limit + 1]
        if len(infos) > limit:
            return Page(infos[:limit], infos[limit - 1].room_id)
        return Page(infos, None)

    async def rooms_of(self, user_id: str) -> list[str]:
        low, high = _range(user_id)

        def build(pipe: Any) -> None:
            for b in range(BUCKETS):
                pipe.zrange(self._lua.key(b, "w"), low, high, bylex=True)

        found = await self._lua.read(build)
        return sorted(str(m)[len(user_id) + 1 :] for members in found for m in members)

    async def is_member(self, room_id: str, user_id: str) -> bool:
        key = self._lua.key(bucket_of(room_id), "k")
        (found,) = await self._lua.read(lambda pipe: pipe.hexists(key, room_id + _SEP + user_id))
        return bool(found)

    async def close(self) -> None:
        await self._handle.close()
