"""The Redis presence backend: every transition is one atomic Lua script (one round trip)."""

from __future__ import annotations

import zlib
from typing import Any, Self

from ..._core.leases import LeaseScript
from ..._core.lifecycle import DEFAULT_TIMEOUT
from ..._core.pages import Page
from ..._core.redis import Keyspace, RedisHandle, redis_unavailable
from ..._core.urls import BackendTarget, check_prefix
from ...errors import ValidationError
from .base import Holding, OnlineUser, PresenceBackend, PresenceCount, Removed

__all__ = ["RedisPresenceBackend"]

#: An instance's connections are spread over this many small hashes, which Redis
#: stores compactly (listpack) up to ~128 entries each: ~130,000 connections per instance.
BUCKETS = 1024

#: Buckets emptied per script call when purging an instance (bounds how long one
#: call blocks Redis).
BUCKETS_PER_PURGE = 32

#: Buckets listed per script call when reconciling an instance (8 calls in all).
BUCKETS_PER_LISTING = 128

_META = "\x1f"  # field names starting with it are not sids (ids have no control characters)


def _bucket(sid: str) -> int:
    return zlib.crc32(sid.encode("utf-8")) % BUCKETS


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


def _online_user(user_id: str, fields: list[str]) -> OnlineUser:
    record = dict(zip(fields[::2], fields[1::2], strict=True))
    connections = sum(1 for name in record if not name.startswith(_META))
    return OnlineUser(user_id, record.get(_META + "name"), float(record[_META + "at"]), connections)


class RedisPresenceBackend(PresenceBackend):
    """Presence shared by every instance on one Redis and prefix.

    Every transition is one Lua script (``presence.lua`` after the lease
    prelude): one round trip, atomic. ``handle`` is closed by ``close()``
    only if it owns its client.
    """

    def __init__(self, handle: RedisHandle, prefix: str) -> None:
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "presence")
        self._run = LeaseScript(handle.client, self._keys, "rtkit.presence", "presence.lua").run

    @classmethod
    def open(cls, target: BackendTarget, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """A backend on ``target``'s Redis (its borrowed client, or a new one from its URL).

        Args:
            target: Where to open.
            timeout: The bound, in seconds, on connecting and on each round trip.
        """
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, target.prefix)

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
        reply = await self._run(
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
            _bucket(sid),
        )
        if reply[0] == "conflict_user":
            raise ValidationError(f"sid {sid!r} is already connected as another user")
        if reply[0] == "conflict_sid":
            raise ValidationError(f"sid {sid!r} of this user is connected on another instance")
        return bool(reply[1]), float(reply[2])

    async def disconnect(self, instance_id: str, sid: str, now: float | None) -> Removed | None:
        reply = await self._run("disconnect", now, instance_id, sid, _bucket(sid))
        if not reply:
            return None
        return _removed(reply[:6], float(reply[6]))[0]

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        left_out = [part for sid in exclude for part in (sid, _bucket(sid))]
        return bool(await self._run("check", None, instance_id, digest, *left_out))

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, str], int | None]:
        stop = min(cursor + BUCKETS_PER_LISTING, BUCKETS)
        flat = await self._run("held", None, instance_id, cursor, stop)
        chunk = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
        return chunk, (None if stop >= BUCKETS else stop)

    async def repair(
        self,
        instance_id: str,
        now: float | None,
        ttl: float,
        entries: list[tuple[str, Holding | None]],
    ) -> tuple[list[Removed], list[str], float]:
        args: list[Any] = []
        for sid, h in entries:
            if h is None:
                args += [sid, _bucket(sid), "", "0", "", "del", ""]
            else:
                named = h.username is not None
                meta = ("set", h.meta) if h.meta is not None else ("del", "")
                args += [sid, _bucket(sid), h.user_id, "1" if named else "0", h.username or ""]
                args += meta
        reply = await self._run("repair", now, instance_id, repr(ttl), *args)
        at = float(reply[0])
        return _removed(reply[1], at), [str(u) for u in reply[2]], at

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[Removed], bool]:
        removed: list[Removed] = []
        own = instance_id or ""
        missing = False
        target, start = "", 0
        while True:
            reply = await self._run(
                "purge",
                now,
                own,
                repr(ttl),
                BUCKETS_PER_PURGE,
                force or "",
                target,
                start,
                BUCKETS,
            )
            missing = missing or bool(reply[2])
            removed += _removed(reply[5:], float(reply[0]))
            if reply[1] == "done":
                return removed, missing
            own = ""  # renewed once per pass
            target, start = reply[3], int(reply[4])
            if start >= BUCKETS:  # that instance is gone: look for the next one
                target, start = "", 0

    async def is_online(self, user_id: str) -> bool:
        with redis_unavailable("reading presence"):
            return bool(await self._handle.client.exists(self._keys.key("u", user_id)))

    async def online_users(self, cursor: str | None, limit: int) -> Page[OnlineUser]:
        start = "-" if cursor is None else "(" + cursor
        reply = await self._run("page", None, start, limit + 1)
        users = [_online_user(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
        if len(users) > limit:
            return Page(users[:limit], users[limit - 1].user_id)
        return Page(users, None)

    async def count(self) -> PresenceCount:
        with redis_unavailable("reading presence"):
            users, conns = await self._handle.client.hmget(
                self._keys.key("count"), "users", "conns"
            )
        return PresenceCount(int(users or 0), int(conns or 0))

    async def connections(self, user_id: str) -> list[str]:
        with redis_unavailable("reading presence"):
            fields = await self._handle.client.hkeys(self._keys.key("u", user_id))
        return sorted(str(f) for f in fields if not str(f).startswith(_META))

    async def meta(self, instance_id: str, sid: str) -> str | None:
        with redis_unavailable("reading presence"):
            value = await self._handle.client.hget(self._keys.key("m", instance_id), sid)
        return None if value is None else str(value)

    async def close(self) -> None:
        await self._handle.close()
