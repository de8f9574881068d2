"""The Redis presence backend: every transition is one atomic Lua script on one bucket.

Users spread over ``BUCKETS`` (32) buckets by a stable hash of their id; each bucket is
one hash tag, ``{<prefix>presence:<bucket>}``, so on a Redis Cluster the buckets (and
the load) spread over every master, and each script runs on the one master of its
bucket. Single-node Redis and Sentinel use the very same layout. What spans users (the
count, a page of online users, an instance's lease, digest and listing, a purge) is one
call or read per bucket, pipelined: one round trip on one Redis, one per master (in
parallel) on a cluster. See ``presence.lua`` for the keys.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Self

from ..._core.leases import BUCKETS, BucketScript, bucket_of, digest_sum
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.pages import Page
from ..._core.redis import Keyspace, RedisHandle
from ..._core.urls import BackendTarget, check_prefix
from ...errors import ValidationError
from .base import Holding, OnlineUser, PresenceBackend, PresenceCount, Removed

__all__ = ["RedisPresenceBackend"]

#: An instance's connections in one bucket are spread over this many small hashes, which
#: Redis keeps compact (listpack) up to 128 entries each: ~130,000 connections per
#: instance stay compact (32 buckets x 32 hashes x 128).
SUBS = 32

#: Connections removed per script call when purging an instance from a bucket (bounds
#: how long one call blocks Redis).
PURGE_BATCH = 500

#: Buckets listed per round trip when reconciling an instance (4 round trips in all).
BUCKETS_PER_LISTING = 8

_SEP = "\x1f"

_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _sub(sid: str) -> int:
    return zlib.crc32(sid.encode("utf-8")) % SUBS


def _removed(flat: list[Any], at: float) -> list[Removed]:
    return [
        Removed(
            flat[i],
            flat[i + 1],
            bool(flat[i + 2]),
            flat[i + 4] if flat[i + 3] else None,
            flat[i + 5],
            at,
        )
        for i in range(0, len(flat), 6)
    ]


def _stored(user_id: str) -> str:
    """``user_id`` as an instance's index keeps it: a lowercase UUID (36 characters) packed
    into 19, its 128 bits in base 128, most significant first. The first is below 4, a
    control character, which ids never have, so a packed id is never taken for a raw one;
    every character is ASCII. Other ids are kept as they are."""
    if len(user_id) != 36 or not _UUID.fullmatch(user_id):
        return user_id
    n = int(user_id.replace("-", ""), 16)
    digits = []
    for _ in range(19):
        n, digit = divmod(n, 128)
        digits.append(chr(digit))
    return "".join(reversed(digits))


def _user_of(stored: str) -> str:
    """The user id an index value is (``unpack_user`` in ``presence.lua`` does the same)."""
    if len(stored) != 19 or stored[0] >= " ":
        return stored
    n = 0
    for char in stored:
        n = n * 128 + ord(char)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _online_user(member: str) -> OnlineUser:
    user_id, at, name, *sids = member.split(_SEP)
    return OnlineUser(user_id, name or None, float(at), len(sids))


def _user_range(user_id: str) -> tuple[str, str]:
    """The ``BYLEX`` bounds of the one member of ``user_id`` (ids have no control chars)."""
    return "[" + user_id + _SEP, "(" + user_id + "\x20"


class RedisPresenceBackend(PresenceBackend):
    """Presence shared by every instance on one Redis (or Cluster, or Sentinel) and prefix.

    Every transition is one Lua script (``presence.lua`` after the lease
    prelude) on the bucket of its user: one round trip, atomic. ``handle`` is
    closed by ``close()`` only if it owns its client.
    """

    def __init__(self, handle: RedisHandle, prefix: str) -> None:
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "presence")
        self._lua = BucketScript(handle.client, self._keys, "rtkit.presence", "presence.lua")
        # (instance, sid) -> the user this backend last connected it for: where to look
        # first. Only a hint (checked by every script); a connection made elsewhere is
        # found on every bucket, in one pipelined round trip.
        self._where: dict[tuple[str, str], str] = {}

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """A backend on ``target``'s Redis (its borrowed client, or a new one from its URL).

        Args:
            target: Where to open.
            timeout: The bound, in seconds, on connecting and on each round trip.
        """
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, target.prefix)

    # -- key names -------------------------------------------------------------------------

    def _base(self, bucket: int, instance_id: str) -> list[str]:
        """KEYS[1..5] of a call on ``bucket`` about ``instance_id``."""
        key = self._lua.key
        return [
            *self._lua.lease_keys(bucket),
            key(bucket, "u"),
            key(bucket, "n"),
            key(bucket, "m", instance_id),
        ]

    def _index(self, bucket: int, instance_id: str, sid: str) -> str:
        return self._lua.key(bucket, "i", instance_id, str(_sub(sid)))

    def _indexes(self, bucket: int, instance_id: str) -> list[str]:
        return [self._lua.key(bucket, "i", instance_id, str(s)) for s in range(SUBS)]

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
        meta_mode = "" if meta is None else ("del" if meta == "{}" else "set")
        b = bucket_of(user_id)
        where = (instance_id, sid)
        before = self._where.get(where)
        if before is not None and before != user_id and await self._find(instance_id, sid, b):
            raise ValidationError(f"sid {sid!r} is already connected as another user")
        self._where[where] = user_id  # before the call: its outcome may stay unknown
        reply = await self._lua.run(
            [*self._base(b, instance_id), self._index(b, instance_id, sid)],
            "connect",
            now,
            instance_id,
            user_id,
            sid,
            "0" if username is None else "1",
            username or "",
            meta_mode,
            meta or "",
            repr(ttl),
            _stored(user_id),
        )
        if reply[0] != "ok":
            self._hint(where, before)
        if reply[0] == "conflict_user":
            raise ValidationError(f"sid {sid!r} is already connected as another user")
        if reply[0] == "conflict_sid":
            raise ValidationError(f"sid {sid!r} of this user is connected on another instance")
        return bool(reply[1]), float(reply[2])

    def _hint(self, where: tuple[str, str], user_id: str | None) -> None:
        if user_id is None:
            self._where.pop(where, None)
        else:
            self._where[where] = user_id

    async def _find(self, instance_id: str, sid: str, skip: int) -> str | None:
        """The user ``sid`` of ``instance_id`` is held for in a bucket other than ``skip``."""
        buckets = [b for b in range(BUCKETS) if b != skip]

        def build(pipe: Any) -> None:
            for b in buckets:
                pipe.hget(self._index(b, instance_id, sid), sid)

        found = [u for u in await self._lua.read(build) if u is not None]
        return _user_of(found[0]) if found else None

    def _disconnect_call(self, b: int, instance_id: str, sid: str) -> tuple[list[str], list[Any]]:
        return [*self._base(b, instance_id), self._index(b, instance_id, sid)], [instance_id, sid]

    async def disconnect(self, instance_id: str, sid: str, now: float | None) -> Removed | None:
        """On the bucket where this backend connected ``sid`` (one round trip); else, or
        when it is not there, on every bucket (one pipelined round trip)."""
        buckets = list(range(BUCKETS))
        user_id = self._where.pop((instance_id, sid), None)
        if user_id is not None:
            b = bucket_of(user_id)
            keys, args = self._disconnect_call(b, instance_id, sid)
            reply = await self._lua.run(keys, "disconnect", now, *args)
            if reply:
                return _removed(reply[:6], float(reply[6]))[0]
            buckets.remove(b)
        calls = [self._disconnect_call(b, instance_id, sid) for b in buckets]
        for reply in await self._lua.run_many("disconnect", now, calls):
            if reply:
                return _removed(reply[:6], float(reply[6]))[0]
        return None

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        calls = [
            (
                [*self._base(b, instance_id), *(self._index(b, instance_id, s) for s in exclude)],
                [instance_id, *exclude],
            )
            for b in range(BUCKETS)
        ]
        return digest_sum(await self._lua.run_many("check", None, calls)) == digest

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, str], int | None]:
        stop = min(cursor + BUCKETS_PER_LISTING, BUCKETS)

        def build(pipe: Any) -> None:
            for b in range(cursor, stop):
                for key in self._indexes(b, instance_id):
                    pipe.hgetall(key)

        chunk: dict[str, str] = {}
        for found in await self._lua.read(build):
            chunk.update((sid, _user_of(stored)) for sid, stored in found.items())
        return chunk, (None if stop >= BUCKETS else stop)

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Holding | None]],
    ) -> tuple[list[Removed], list[str], float]:
        """Every bucket in one pipelined round trip: a sid held for another user (or in
        another bucket) is removed there, the holding is put in its user's bucket."""
        calls = []
        for b in range(BUCKETS):
            keys = self._base(b, instance_id)
            args: list[Any] = [instance_id, repr(ttl)]
            for sid, h in entries:
                keys.append(self._index(b, instance_id, sid))
                if h is None or bucket_of(h.user_id) != b:
                    args += [sid, "", "", "0", "", "", ""]
                else:
                    meta = ("set", h.meta) if h.meta is not None else ("del", "")
                    args += [sid, h.user_id, _stored(h.user_id)]
                    args += ["0" if h.username is None else "1", h.username or "", *meta]
            calls.append((keys, args))
        for sid, h in entries:
            self._hint((instance_id, sid), None if h is None else h.user_id)
        replies = await self._lua.run_many("repair", now, calls)
        at = float(replies[0][0])
        removed = [r for reply in replies for r in _removed(reply[1], at)]
        first: dict[str, int] = {}
        for i, (_, h) in enumerate(entries):
            if h is not None:
                first.setdefault(h.user_id, i)
        online = sorted((str(u) for reply in replies for u in reply[2]), key=first.__getitem__)
        return removed, online, at

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[Removed], bool]:
        forced = "" if force is None else "1"

        def call(b: int, target: str) -> tuple[list[str], list[Any]]:
            keys = [*self._base(b, target), *self._indexes(b, target)]
            return keys, [target, forced, PURGE_BATCH]

        replies, missing = await self._lua.purge(call, instance_id, now, ttl, force)
        removed = [r for reply in replies for r in _removed(reply[2:], float(reply[0]))]
        for r in removed:
            self._where.pop((r.instance_id, r.sid), None)
        return removed, missing

    async def is_online(self, user_id: str) -> bool:
        low, high = _user_range(user_id)
        key = self._lua.key(bucket_of(user_id), "u")
        (found,) = await self._lua.read(lambda pipe: pipe.zlexcount(key, low, high))
        return bool(found)

    async def online_users(self, cursor: str | None, limit: int) -> Page[OnlineUser]:
        """A page merged from the buckets: each is asked for about twice its share of
        ``limit + 1`` users (one pipelined round trip); only a bucket that may still hold
        users before the page's last one is asked again, for ``limit + 1`` more."""
        want = limit + 1
        first = "-" if cursor is None else "[" + cursor + "\x20"
        starts: dict[int, str] = dict.fromkeys(range(BUCKETS), first)
        count = min(want, 2 * want // BUCKETS + 4)
        members: list[str] = []
        while starts:
            asked = list(starts.items())

            def build(pipe: Any, asked: list[tuple[int, str]] = asked, n: int = count) -> None:
                for b, start in asked:
                    pipe.zrange(self._lua.key(b, "u"), start, "+", bylex=True, offset=0, num=n)

            found = await self._lua.read(build)
            members = sorted([*members, *(str(m) for batch in found for m in batch)])[:want]
            cutoff = members[-1] if len(members) == want else None
            starts = {
                b: "(" + batch[-1]
                for (b, _), batch in zip(asked, found, strict=True)
                if len(batch) == count and (cutoff is None or batch[-1] < cutoff)
            }
            count = want
        users = [_online_user(m) for m in members]
        if len(users) > limit:
            return Page(users[:limit], users[limit - 1].user_id)
        return Page(users, None)

    async def count(self) -> PresenceCount:
        def build(pipe: Any) -> None:
            for b in range(BUCKETS):
                pipe.zcard(self._lua.key(b, "u"))
                pipe.get(self._lua.key(b, "n"))

        found = await self._lua.read(build)
        users = sum(int(n) for n in found[0::2])
        return PresenceCount(users, sum(int(n or 0) for n in found[1::2]))

    async def connections(self, user_id: str) -> list[str]:
        low, high = _user_range(user_id)
        key = self._lua.key(bucket_of(user_id), "u")
        (found,) = await self._lua.read(
            lambda pipe: pipe.zrange(key, low, high, bylex=True, offset=0, num=1)
        )
        return sorted(found[0].split(_SEP)[3:]) if found else []

    async def meta(self, instance_id: str, sid: str) -> str | None:
        """On the bucket where this backend connected ``sid``, else on every bucket."""
        user_id = self._where.get((instance_id, sid))
        buckets = [bucket_of(user_id)] if user_id is not None else range(BUCKETS)

        def build(pipe: Any) -> None:
            for b in buckets:
                pipe.hget(self._lua.key(b, "m", instance_id), sid)

        found = [v for v in await self._lua.read(build) if v is not None]
        return str(found[0]) if found else None

    async def close(self) -> None:
        await self._handle.close()
