"""What the realtime stores' backends implement, and the ``FileStore`` protocol.

[`MessageStore`][rtkit.realtime.MessageStore],
[`NotificationStore`][rtkit.realtime.NotificationStore] and
[`UploadRegistry`][rtkit.realtime.UploadRegistry] check their arguments, read
their clock, then call one of these backends (memory: the executable
specification; Redis) with ``now`` in seconds. A backend class also has
``open(target, **options)``. Nothing concrete is imported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ....errors import QuotaExceeded
from ..._protocol import HistoryEntry, Notification

__all__ = [
    "DEFAULT_COMPLETE_TTL",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_PER_ROOM",
    "DEFAULT_MAX_PER_USER",
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_NOTIFICATION_TTL",
    "DEFAULT_PENDING_TTL",
    "FileStore",
    "MessageStoreBackend",
    "NotificationStoreBackend",
    "UploadQuota",
    "UploadRecord",
    "UploadRegistryBackend",
    "UploadUsage",
    "check_quota",
    "latest",
    "millis",
]

DEFAULT_MAX_PER_ROOM = 1000
"""Messages a message store backend keeps per room (Redis: about as many)."""

DEFAULT_MAX_AGE = 30 * 24 * 3600.0
"""Seconds a chat message is kept (history older than this is gone)."""

DEFAULT_MAX_PER_USER = 100
"""Notifications a notification store backend keeps per offline user."""

DEFAULT_NOTIFICATION_TTL = 7 * 24 * 3600.0
"""Seconds an offline user's notifications are kept after the last one arrived."""

DEFAULT_PENDING_TTL = 3600.0
"""Seconds an announced upload may wait for its bytes."""

DEFAULT_COMPLETE_TTL = 30 * 24 * 3600.0
"""Seconds a complete upload (and its file) is kept."""

DEFAULT_MAX_RECORDS = 100_000
"""Upload records a memory registry keeps at most (the soonest to expire go first)."""


def millis(seconds: float) -> int:
    """``seconds`` as whole milliseconds: the one time unit both backends compare in."""
    return int(seconds * 1000)


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


@dataclass(frozen=True)
class UploadQuota:
    """The bounds :meth:`UploadRegistry.create` checks atomically (``None``: unbounded).

    Attributes:
        user_bytes: bytes of one user's live uploads (pending and complete) together.
        total_bytes: bytes of every live upload of the registry (the deployment).
        user_uploads: how many live uploads one user may have.
    """

    user_bytes: int | None = None
    total_bytes: int | None = None
    user_uploads: int | None = None


@dataclass(frozen=True)
class UploadUsage:
    """What live uploads use: ``bytes`` and ``uploads`` (of one user, or of everyone)."""

    bytes: int
    uploads: int


def latest(
    entries: Iterable[HistoryEntry | None], before: str | None, limit: int, kinds: Set[str]
) -> list[HistoryEntry]:
    """The selection rule: of entries newest first, the ``limit`` latest of ``kinds`` before
    ``before`` (``None``: an entry of a kind this version does not know, skipped).

    Returned oldest first. Entry ids are UUIDv7 strings, so "before" is string order.
    """
    picked: list[HistoryEntry] = []
    for entry in entries:
        if entry is None or entry.kind not in kinds:
            continue
        if before is not None and entry.id >= before:
            continue
        picked.append(entry)
        if len(picked) == limit:
            break
    picked.reverse()
    return picked


def check_quota(quota: UploadQuota, used: int, count: int, total: int, size: int) -> None:
    """Raise ``QuotaExceeded`` when one more upload of ``size`` bytes passes a bound."""
    if quota.user_uploads is not None and count + 1 > quota.user_uploads:
        raise QuotaExceeded(f"you have {count} uploads already, the most allowed")
    if quota.user_bytes is not None and used + size > quota.user_bytes:
        raise QuotaExceeded(
            f"this upload would take your uploads past {quota.user_bytes} bytes "
            f"({used} bytes in use)"
        )
    if quota.total_bytes is not None and total + size > quota.total_bytes:
        raise QuotaExceeded(f"the server's upload space ({quota.total_bytes} bytes) is full")


class MessageStoreBackend(Protocol):
    """Keeps the latest history entries of each room (arguments already checked).

    Entries are chat messages, file shares, joins and leaves, kept together.
    Retention: the latest ``max_per_room`` entries of a room (Redis: about as
    many), none older than ``max_age`` seconds; an entry appended at ``now``
    (in whole milliseconds) is gone once ``now + max_age`` is reached.
    """

    async def append(self, entry: HistoryEntry, now: float) -> None:
        """Save ``entry`` in its room's history, as of ``now``."""
        ...

    async def history(
        self, room_id: str, before: str | None, limit: int, now: float, kinds: Set[str]
    ) -> list[HistoryEntry]:
        """The latest ``limit`` live entries of ``kinds`` in ``room_id`` with ids below
        ``before`` (:func:`latest`), oldest first."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (a borrowed Redis client stays open)."""
        ...


class NotificationStoreBackend(Protocol):
    """Keeps notifications for offline users until they come back (arguments already checked).

    A user's notifications expire ``ttl`` seconds after the last one was pushed.
    """

    async def push(self, notification: Notification, now: float) -> None:
        """Keep ``notification`` for its ``to_user_id`` (the oldest goes when full)."""
        ...

    async def take(self, user_id: str, now: float) -> list[Notification]:
        """Remove and return every live notification kept for ``user_id``, oldest first."""
        ...

    async def close(self) -> None:
        """Release what the backend holds."""
        ...


class UploadRegistryBackend(Protocol):
    """Shared bookkeeping of announced uploads (arguments already checked).

    An upload is *pending* after ``create`` (for ``pending_ttl`` seconds), claimed
    by the one request that ``claim`` returned it to, then *complete* (kept for
    ``complete_ttl`` seconds) or pending again (``release``). A record whose time
    is up (``expires <= now``, in whole milliseconds) is gone for every
    operation; ``purge_expired`` forgets it and its share of the quotas.
    """

    async def create(self, record: UploadRecord, quota: UploadQuota, now: float) -> None:
        """Register a new pending upload, or raise ``QuotaExceeded`` and change nothing."""
        ...

    async def get(self, upload_id: str, now: float) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None`` if unknown or expired."""
        ...

    async def claim(self, upload_id: str, now: float) -> UploadRecord | None:
        """Atomically take a pending upload for transfer; ``None`` if unknown, busy or done."""
        ...

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back (its transfer failed)."""
        ...

    async def complete(self, upload_id: str, now: float) -> UploadRecord:
        """Mark a claimed upload complete and return its record (``NotFound`` if gone)."""
        ...

    async def usage(self, user_id: str | None, now: float) -> UploadUsage:
        """What the live uploads of ``user_id`` (``None``: of everyone) use."""
        ...

    async def known(self, upload_ids: Sequence[str], now: float) -> set[str]:
        """Which of ``upload_ids`` have a live record."""
        ...

    async def purge_expired(self, now: float, limit: int) -> list[str]:
        """Forget up to ``limit`` expired records; return their upload ids."""
        ...

    async def close(self) -> None:
        """Release what the backend holds."""
        ...


@runtime_checkable
class FileStore(Protocol):
    """Keeps uploaded files' bytes ([`LocalFileStore`][rtkit.realtime.LocalFileStore]: a folder).

    The server's janitor lists the stored ids and deletes the files whose upload
    records are gone (expired, or never completed by a crashed instance).
    """

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

    async def delete(self, upload_id: str) -> None:
        """Remove what is stored for ``upload_id`` (partial writes included); no error if none."""
        ...

    def ids(self) -> AsyncIterator[str]:
        """Every upload id something is stored for (partial writes included)."""
        ...
