"""What the realtime stores' backends implement, and the ``FileStore`` protocol.

[`MessageStore`][rtkit.realtime.MessageStore],
[`NotificationStore`][rtkit.realtime.NotificationStore] and
[`UploadRegistry`][rtkit.realtime.UploadRegistry] check their arguments, then
call one of these backends (memory: the executable specification; Redis). A
backend class also has ``open(target, **options)``. Nothing concrete is imported
here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ..._protocol import ChatMessage, Notification

__all__ = [
    "DEFAULT_MAX_PER_ROOM",
    "DEFAULT_MAX_PER_USER",
    "FileStore",
    "MessageStoreBackend",
    "NotificationStoreBackend",
    "UploadRecord",
    "UploadRegistryBackend",
    "latest",
]

DEFAULT_MAX_PER_ROOM = 1000
"""Messages a message store backend keeps per room (Redis: about as many)."""

DEFAULT_MAX_PER_USER = 100
"""Notifications a notification store backend keeps per offline user."""


class UploadRecord(BaseModel):
    """An announced upload: who may send it, into which room, how big."""

    model_config = ConfigDict(frozen=True)

    upload_id: str
    room_id: str
    user_id: str
    file_name: str
    file_size: int
    created_at: float
    complete: bool = False


def latest(messages: Iterable[ChatMessage], before: str | None, limit: int) -> list[ChatMessage]:
    """The selection rule: of messages newest first, the ``limit`` latest before ``before``.

    Returned oldest first. Message ids are UUIDv7 strings, so "before" is string order.
    """
    picked: list[ChatMessage] = []
    for message in messages:
        if before is not None and message.id >= before:
            continue
        picked.append(message)
        if len(picked) == limit:
            break
    picked.reverse()
    return picked


class MessageStoreBackend(Protocol):
    """Keeps the latest chat messages of each room (arguments already checked)."""

    async def append(self, message: ChatMessage) -> None:
        """Save ``message`` in its room's history."""
        ...

    async def history(self, room_id: str, before: str | None, limit: int) -> list[ChatMessage]:
        """The latest ``limit`` messages of ``room_id`` with ids below ``before``, oldest first."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (a borrowed Redis client stays open)."""
        ...


class NotificationStoreBackend(Protocol):
    """Keeps notifications for offline users until they come back (arguments already checked)."""

    async def push(self, notification: Notification) -> None:
        """Keep ``notification`` for its ``to_user_id`` (the oldest goes when full)."""
        ...

    async def take(self, user_id: str) -> list[Notification]:
        """Remove and return every notification kept for ``user_id``, oldest first."""
        ...

    async def close(self) -> None:
        """Release what the backend holds."""
        ...


class UploadRegistryBackend(Protocol):
    """Shared bookkeeping of announced uploads (arguments already checked).

    An upload is *pending* after ``create``, *claimed* by the one request that
    ``claim`` returned it to, then *complete* or pending again (``release``).
    """

    async def create(self, record: UploadRecord) -> None:
        """Register a new pending upload."""
        ...

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None`` if unknown or expired."""
        ...

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Atomically take a pending upload for transfer; ``None`` if unknown, busy or done."""
        ...

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back (its transfer failed)."""
        ...

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete and return its record (``NotFound`` if gone)."""
        ...

    async def close(self) -> None:
        """Release what the backend holds."""
        ...


@runtime_checkable
class FileStore(Protocol):
    """Keeps uploaded files' bytes ([`LocalFileStore`][rtkit.realtime.LocalFileStore]: a folder)."""

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        """Store exactly ``size`` bytes read from ``chunks`` under ``upload_id``.

        Raises [`ValidationError`][rtkit.errors.ValidationError] if the body is shorter
        or longer; nothing is kept then.
        """
        ...

    def open(self, upload_id: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``upload_id`` in chunks.

        Raises [`NotFound`][rtkit.errors.NotFound] if there is none.
        """
        ...
