"""The realtime stores on Redis, shared by every server instance.

* messages: one Redis Stream per room, ``XADD MAXLEN ~ max_per_room``;
* notifications: one list per user, trimmed to ``max_per_user`` and expiring
  after ``ttl`` seconds;
* uploads: one JSON string per upload that expires (``pending_ttl``, then
  ``complete_ttl``); a ``SET NX`` key claims a transfer.
"""

from __future__ import annotations

from typing import Any, Self

import redis.asyncio as aioredis

from ...._core.lifecycle import DEFAULT_TIMEOUT
from ...._core.redis import Keyspace, RedisHandle, redis_unavailable
from ...._core.urls import BackendTarget
from ...._core.validate import check_int, check_seconds
from ....errors import NotFound
from ..._protocol import ChatMessage, Notification
from .base import DEFAULT_MAX_PER_ROOM, DEFAULT_MAX_PER_USER, UploadRecord, latest

__all__ = [
    "RedisMessageStoreBackend",
    "RedisNotificationStoreBackend",
    "RedisUploadRegistryBackend",
]

DEFAULT_NOTIFICATION_TTL = 7 * 24 * 3600.0
DEFAULT_PENDING_TTL = 3600.0
DEFAULT_COMPLETE_TTL = 30 * 24 * 3600.0


class _RedisBackend:
    """A Redis client (owned or borrowed) and the keys of one store."""

    def __init__(self, handle: RedisHandle, prefix: str, component: str) -> None:
        self._handle = handle
        self._keys = Keyspace(prefix, component)

    @property
    def _redis(self) -> aioredis.Redis:
        return self._handle.client

    async def close(self) -> None:
        """Close the Redis client if this backend made it (a borrowed one stays open)."""
        await self._handle.close()


class RedisMessageStoreBackend(_RedisBackend):
    """Messages in one Redis Stream per room, trimmed to about ``max_per_room`` entries."""

    def __init__(
        self, handle: RedisHandle, *, prefix: str, max_per_room: int = DEFAULT_MAX_PER_ROOM
    ) -> None:
        super().__init__(handle, prefix, "messages")
        self.max_per_room = check_int(max_per_room, "max_per_room")

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
    ) -> Self:
        """The backend on ``target``'s Redis (its client borrowed when given)."""
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, prefix=target.prefix, max_per_room=max_per_room)

    async def append(self, message: ChatMessage) -> None:
        """``XADD`` the message to its room's stream, ``MAXLEN ~ max_per_room``."""
        with redis_unavailable("saving a chat message"):
            await self._redis.xadd(
                self._keys.key("room", message.room_id),
                {"m": message.model_dump_json(by_alias=True)},
                maxlen=self.max_per_room,
                approximate=True,
            )

    async def history(self, room_id: str, before: str | None, limit: int) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than ``before``, oldest first."""
        key = self._keys.key("room", room_id)
        newest_first: list[ChatMessage] = []
        end = "+"
        count = limit + 50
        with redis_unavailable("reading chat history"):
            while len(newest_first) < limit:
                batch: Any = await self._redis.xrevrange(key, max=end, count=count)
                messages = [ChatMessage.model_validate_json(fields["m"]) for _, fields in batch]
                newest_first.extend(reversed(latest(messages, before, limit - len(newest_first))))
                if len(batch) < count:
                    break
                end = "(" + batch[-1][0]
        newest_first.reverse()
        return newest_first


class RedisNotificationStoreBackend(_RedisBackend):
    """Pending notifications in one Redis list per user, expiring after ``ttl`` seconds."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        ttl: float = DEFAULT_NOTIFICATION_TTL,
    ) -> None:
        super().__init__(handle, prefix, "notifications")
        self.max_per_user = check_int(max_per_user, "max_per_user")
        self._ttl_ms = int(check_seconds(ttl, "ttl") * 1000)

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        ttl: float = DEFAULT_NOTIFICATION_TTL,
    ) -> Self:
        """The backend on ``target``'s Redis (its client borrowed when given)."""
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, prefix=target.prefix, max_per_user=max_per_user, ttl=ttl)

    async def push(self, notification: Notification) -> None:
        """``RPUSH`` + ``LTRIM`` + ``PEXPIRE`` in one transaction."""
        key = self._keys.key("user", notification.to_user_id)
        with redis_unavailable("saving a notification"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, notification.model_dump_json(by_alias=True))
                pipe.ltrim(key, -self.max_per_user, -1)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    async def take(self, user_id: str) -> list[Notification]:
        """``LRANGE`` + ``DEL`` in one transaction: each notification is taken once."""
        key = self._keys.key("user", user_id)
        with redis_unavailable("taking notifications"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                raw, _ = await pipe.execute()
        return [Notification.model_validate_json(item) for item in raw]


class RedisUploadRegistryBackend(_RedisBackend):
    """Upload records as Redis strings (JSON) that expire; a ``SET NX`` key claims a transfer."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        pending_ttl: float = DEFAULT_PENDING_TTL,
        complete_ttl: float = DEFAULT_COMPLETE_TTL,
    ) -> None:
        super().__init__(handle, prefix, "uploads")
        self._pending_ms = int(check_seconds(pending_ttl, "pending_ttl") * 1000)
        self._complete_ms = int(check_seconds(complete_ttl, "complete_ttl") * 1000)

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pending_ttl: float = DEFAULT_PENDING_TTL,
        complete_ttl: float = DEFAULT_COMPLETE_TTL,
    ) -> Self:
        """The backend on ``target``'s Redis (its client borrowed when given)."""
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, prefix=target.prefix, pending_ttl=pending_ttl, complete_ttl=complete_ttl)

    async def create(self, record: UploadRecord) -> None:
        """Register a new pending upload (expires after ``pending_ttl``)."""
        with redis_unavailable("registering an upload"):
            await self._redis.set(
                self._keys.key(record.upload_id), record.model_dump_json(), px=self._pending_ms
            )

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None``."""
        with redis_unavailable("reading an upload"):
            raw = await self._redis.get(self._keys.key(upload_id))
        return None if raw is None else UploadRecord.model_validate_json(raw)

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Take a pending upload for transfer (``SET claim NX``)."""
        record = await self.get(upload_id)
        if record is None or record.complete:
            return None
        with redis_unavailable("claiming an upload"):
            ok = await self._redis.set(
                self._keys.key(upload_id, "claim"), "1", nx=True, px=self._pending_ms
            )
        return record if ok else None

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back."""
        with redis_unavailable("releasing an upload"):
            await self._redis.delete(self._keys.key(upload_id, "claim"))

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete (kept for ``complete_ttl``)."""
        record = await self.get(upload_id)
        if record is None:
            raise NotFound(f"upload {upload_id!r} is unknown or expired")
        done = record.model_copy(update={"complete": True})
        with redis_unavailable("completing an upload"):
            await self._redis.set(
                self._keys.key(upload_id), done.model_dump_json(), px=self._complete_ms
            )
        return done
