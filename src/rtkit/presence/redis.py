"""The Redis presence backend: every transition is one atomic Lua script (one round trip)."""

from __future__ import annotations

import zlib
from typing import Any

import redis.asyncio as aioredis

from .._backends import Keyspace, RedisHandle, load_lua, redis_unavailable
from .._leases import LEASE_LUA
from .._pages import Page
from ..errors import ValidationError
from .base import OnlineUser, PresenceBackend, PresenceCount, Removed

__all__ = ["BUCKETS", "BUCKETS_PER_PURGE", "RedisPresenceBackend"]

#: An instance's connections are spread over this many small hashes, which Redis
#: stores compactly (listpack) up to ~128 entries each: ~130,000 connections per instance.
BUCKETS = 1024

#: Buckets emptied per script call when purging an instance (bounds how long one
#: call blocks Redis).
BUCKETS_PER_PURGE = 32

_META = "\x1f"  # field names starting with it are not sids (ids have no control characters)


def _bucket(sid: str) -> int:
    return zlib.crc32(sid.encode("utf-8")) % BUCKETS


def _arg(now: float | None) -> str:
    return "" if now is None else repr(now)


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
    """Presence shared by every instance on one Redis and prefix."""

    def __init__(self, url: str, prefix: str, client: aioredis.Redis | None) -> None:
        self._handle = RedisHandle(url, client=client)
        self._keys = Keyspace(prefix, "presence")
        self._leases = self._keys.key("leases")
        self._script = self._handle.client.register_script(
            LEASE_LUA + load_lua("rtkit.presence", "presence.lua")
        )

    async def _run(self, op: str, now: float | None, *args: Any) -> Any:
        with redis_unavailable(f"running presence {op}"):
            return await self._script(
                keys=[self._leases], args=[op, self._keys.base, _arg(now), *args]
            )

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
