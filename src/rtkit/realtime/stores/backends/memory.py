"""The realtime stores in process memory: the executable specification of their backends.

``memory://`` gives each store a state of its own; ``memory://NAME`` shares one
state between every store of the same kind opened with that name.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Self, TypeVar

from ...._core.memory import shared_state
from ...._core.urls import BackendTarget
from ...._core.validate import check_int
from ....errors import NotFound
from ..._protocol import ChatMessage, Notification
from .base import DEFAULT_MAX_PER_ROOM, DEFAULT_MAX_PER_USER, UploadRecord, latest

__all__ = [
    "MemoryMessageStoreBackend",
    "MemoryNotificationStoreBackend",
    "MemoryUploadRegistryBackend",
]

T = TypeVar("T")


class _Queues(Generic[T]):
    """A bounded queue per key (room or user): the state a memory store shares."""

    def __init__(self) -> None:
        self.by_key: dict[str, deque[T]] = {}


class MemoryMessageStoreBackend:
    """Messages in process memory: the latest ``max_per_room`` of each room."""

    def __init__(self, *, max_per_room: int = DEFAULT_MAX_PER_ROOM) -> None:
        self.max_per_room = check_int(max_per_room, "max_per_room")
        self._state: _Queues[ChatMessage] = _Queues()

    @classmethod
    def open(cls, target: BackendTarget, *, max_per_room: int = DEFAULT_MAX_PER_ROOM) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls(max_per_room=max_per_room)
        backend._state = shared_state(target, _Queues[ChatMessage])
        return backend

    async def append(self, message: ChatMessage) -> None:
        """Save ``message`` in its room's history (the oldest goes when full)."""
        rooms = self._state.by_key
        rooms.setdefault(message.room_id, deque(maxlen=self.max_per_room)).append(message)

    async def history(self, room_id: str, before: str | None, limit: int) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` older than ``before``, oldest first."""
        room = self._state.by_key.get(room_id)
        return [] if room is None else latest(reversed(room), before, limit)

    async def close(self) -> None:
        """Nothing to release."""


class MemoryNotificationStoreBackend:
    """Pending notifications in process memory, the latest ``max_per_user`` per user."""

    def __init__(self, *, max_per_user: int = DEFAULT_MAX_PER_USER) -> None:
        self.max_per_user = check_int(max_per_user, "max_per_user")
        self._state: _Queues[Notification] = _Queues()

    @classmethod
    def open(cls, target: BackendTarget, *, max_per_user: int = DEFAULT_MAX_PER_USER) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls(max_per_user=max_per_user)
        backend._state = shared_state(target, _Queues[Notification])
        return backend

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its recipient (the oldest is dropped when full)."""
        users = self._state.by_key
        queue = users.setdefault(notification.to_user_id, deque(maxlen=self.max_per_user))
        queue.append(notification)

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return the notifications kept for ``user_id``, oldest first."""
        return list(self._state.by_key.pop(user_id, ()))

    async def close(self) -> None:
        """Nothing to release."""


class _Uploads:
    """The records and the claimed ids: the state memory upload registries share."""

    def __init__(self) -> None:
        self.records: dict[str, UploadRecord] = {}
        self.claimed: set[str] = set()


class MemoryUploadRegistryBackend:
    """Upload records in process memory (they never expire)."""

    def __init__(self) -> None:
        self._state = _Uploads()

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls()
        backend._state = shared_state(target, _Uploads)
        return backend

    async def create(self, record: UploadRecord) -> None:
        """Register a new pending upload."""
        self._state.records[record.upload_id] = record

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None``."""
        return self._state.records.get(upload_id)

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Take a pending upload for transfer."""
        record = self._state.records.get(upload_id)
        if record is None or record.complete or upload_id in self._state.claimed:
            return None
        self._state.claimed.add(upload_id)
        return record

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back."""
        self._state.claimed.discard(upload_id)

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete."""
        record = self._state.records.get(upload_id)
        if record is None:
            raise NotFound(f"upload {upload_id!r} is unknown or expired")
        done = record.model_copy(update={"complete": True})
        self._state.records[upload_id] = done
        self._state.claimed.discard(upload_id)
        return done

    async def close(self) -> None:
        """Nothing to release."""
