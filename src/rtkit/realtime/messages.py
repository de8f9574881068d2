"""Where chat messages and undelivered notifications are kept.

[`MessageStore`][rtkit.realtime.MessageStore] keeps the latest messages of every
room (a bounded deque in memory; one bounded Redis Stream per room, ``XADD MAXLEN
~``). [`NotificationStore`][rtkit.realtime.NotificationStore] keeps the
notifications sent to a user who was offline, until the user connects again
(bounded per user; a Redis list with an expiry).

Both are chosen by URL with ``from_url`` (``memory://`` or ``redis://...``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis

from .._backends import (
    DEFAULT_PREFIX,
    Keyspace,
    RedisHandle,
    backend_kind,
    check_prefix,
    redis_unavailable,
)
from .._validation import check_id
from ..errors import ConfigurationError, ValidationError
from .models import ChatMessage, Notification

__all__ = [
    "MemoryMessageStore",
    "MemoryNotificationStore",
    "MessageStore",
    "NotificationStore",
    "RedisMessageStore",
    "RedisNotificationStore",
]

_MAX_HISTORY = 200


@runtime_checkable
class MessageStore(Protocol):
    """Keeps the latest chat messages of each room."""

    async def append(self, message: ChatMessage) -> None:
        """Save ``message`` in its room's history."""
        ...

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than message id ``before``.

        Oldest first. Message ids are UUIDv7 strings, so "older" is string order.
        """
        ...

    async def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class NotificationStore(Protocol):
    """Keeps notifications for users who are offline until they come back."""

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its ``to_user_id``."""
        ...

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return every notification kept for ``user_id``, oldest first."""
        ...

    async def close(self) -> None:
        """Release the backend's resources."""
        ...


def _check_history_args(room_id: str, before: str | None, limit: int) -> None:
    check_id(room_id, "room_id")
    if before is not None:
        check_id(before, "before")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_HISTORY:
        raise ValidationError(f"limit must be an integer from 1 to {_MAX_HISTORY}")


def _latest(messages: Iterable[ChatMessage], before: str | None, limit: int) -> list[ChatMessage]:
    """The selection rule: of messages newest first, the ``limit`` latest before ``before``."""
    picked: list[ChatMessage] = []
    for message in messages:
        if before is not None and message.id >= before:
            continue
        picked.append(message)
        if len(picked) == limit:
            break
    picked.reverse()
    return picked


def _check_bound(value: int, what: str) -> int:
    if value < 1:
        raise ConfigurationError(f"{what} must be at least 1")
    return value


class _Base:
    def __init__(self, max_per_key: int, what: str) -> None:
        self.max_per_key = _check_bound(max_per_key, what)


class MemoryMessageStore(_Base):
    """Messages in process memory: the latest ``max_per_room`` of each room."""

    def __init__(self, *, max_per_room: int = 1000) -> None:
        super().__init__(max_per_room, "max_per_room")
        self._rooms: dict[str, deque[ChatMessage]] = {}

    async def append(self, message: ChatMessage) -> None:
        """Save ``message`` in its room's history."""
        room = self._rooms.setdefault(message.room_id, deque(maxlen=self.max_per_key))
        room.append(message)

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than ``before``, oldest first."""
        _check_history_args(room_id, before, limit)
        return _latest(reversed(self._rooms.get(room_id, ())), before, limit)

    async def close(self) -> None:
        """Nothing to release."""


class RedisMessageStore(_Base):
    """Messages in one Redis Stream per room, trimmed to about ``max_per_room`` entries."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_per_room: int = 1000,
    ) -> None:
        super().__init__(max_per_room, "max_per_room")
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "messages")

    @property
    def _redis(self) -> aioredis.Redis:
        return self._handle.client

    async def append(self, message: ChatMessage) -> None:
        """``XADD`` the message to its room's stream, ``MAXLEN ~ max_per_room``."""
        with redis_unavailable("saving a chat message"):
            await self._redis.xadd(
                self._keys.key("room", message.room_id),
                {"m": message.model_dump_json(by_alias=True)},
                maxlen=self.max_per_key,
                approximate=True,
            )

    async def history(
        self, room_id: str, *, before: str | None = None, limit: int = 50
    ) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than ``before``, oldest first."""
        _check_history_args(room_id, before, limit)
        key = self._keys.key("room", room_id)
        newest_first: list[ChatMessage] = []
        end = "+"
        count = limit + 50
        with redis_unavailable("reading chat history"):
            while len(newest_first) < limit:
                batch: Any = await self._redis.xrevrange(key, max=end, count=count)
                messages = [ChatMessage.model_validate_json(fields["m"]) for _, fields in batch]
                newest_first.extend(reversed(_latest(messages, before, limit - len(newest_first))))
                if len(batch) < count:
                    break
                end = "(" + batch[-1][0]
        newest_first.reverse()
        return newest_first

    async def close(self) -> None:
        """Close the Redis client if this store owns it."""
        await self._handle.close()


class MemoryNotificationStore(_Base):
    """Pending notifications in process memory, the latest ``max_per_user`` per user."""

    def __init__(self, *, max_per_user: int = 100) -> None:
        super().__init__(max_per_user, "max_per_user")
        self._users: dict[str, deque[Notification]] = {}

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its recipient (the oldest is dropped when full)."""
        queue = self._users.setdefault(notification.to_user_id, deque(maxlen=self.max_per_key))
        queue.append(notification)

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return the notifications kept for ``user_id``, oldest first."""
        check_id(user_id, "user_id")
        return list(self._users.pop(user_id, ()))

    async def close(self) -> None:
        """Nothing to release."""


class RedisNotificationStore(_Base):
    """Pending notifications in one Redis list per user, expiring after ``ttl`` seconds."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_per_user: int = 100,
        ttl: float = 7 * 24 * 3600.0,
    ) -> None:
        super().__init__(max_per_user, "max_per_user")
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "notifications")
        self._ttl_ms = int(ttl * 1000)

    async def push(self, notification: Notification) -> None:
        """``RPUSH`` + ``LTRIM`` + ``PEXPIRE`` in one transaction."""
        key = self._keys.key("user", notification.to_user_id)
        with redis_unavailable("saving a notification"):
            async with self._handle.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, notification.model_dump_json(by_alias=True))
                pipe.ltrim(key, -self.max_per_key, -1)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    async def take(self, user_id: str) -> list[Notification]:
        """``LRANGE`` + ``DEL`` in one transaction: each notification is taken once."""
        check_id(user_id, "user_id")
        key = self._keys.key("user", user_id)
        with redis_unavailable("taking notifications"):
            async with self._handle.client.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                raw, _ = await pipe.execute()
        return [Notification.model_validate_json(item) for item in raw]

    async def close(self) -> None:
        """Close the Redis client if this store owns it."""
        await self._handle.close()


def message_store_from_url(
    url: str = "memory://",
    *,
    prefix: str = DEFAULT_PREFIX,
    max_per_room: int = 1000,
    redis: aioredis.Redis | None = None,
) -> MessageStore:
    """A [`MessageStore`][rtkit.realtime.MessageStore] for ``url`` (``memory://`` or Redis)."""
    if backend_kind(url, component="MessageStore") == "memory":
        return MemoryMessageStore(max_per_room=max_per_room)
    handle = RedisHandle(url, client=redis)
    return RedisMessageStore(handle, prefix=prefix, max_per_room=max_per_room)


def notification_store_from_url(
    url: str = "memory://",
    *,
    prefix: str = DEFAULT_PREFIX,
    max_per_user: int = 100,
    redis: aioredis.Redis | None = None,
) -> NotificationStore:
    """A [`NotificationStore`][rtkit.realtime.NotificationStore] for ``url``."""
    if backend_kind(url, component="NotificationStore") == "memory":
        return MemoryNotificationStore(max_per_user=max_per_user)
    handle = RedisHandle(url, client=redis)
    return RedisNotificationStore(handle, prefix=prefix, max_per_user=max_per_user)
