"""The realtime stores in process memory: the executable specification of their backends.

``memory://`` gives each store a state of its own; ``memory://NAME`` shares one
state between every store of the same kind opened with that name. Every store
forgets: history by length and age, notifications after ``ttl``, upload records
when their time is up. Each is bounded in memory too (Redis needs no such bound):
at most ``max_rooms`` rooms of history and ``max_users`` users' notifications (the
least recently written go first), ``max_records`` upload records (the soonest to
expire go first).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence, Set
from typing import Self

from ...._core.memory import shared_state
from ...._core.urls import BackendTarget
from ...._core.validate import check_int, check_seconds
from ....errors import NotFound
from ..._protocol import HistoryEntry, Notification
from .base import (
    DEFAULT_COMPLETE_TTL,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_PER_ROOM,
    DEFAULT_MAX_PER_USER,
    DEFAULT_MAX_RECORDS,
    DEFAULT_NOTIFICATION_TTL,
    DEFAULT_PENDING_TTL,
    UploadQuota,
    UploadRecord,
    UploadUsage,
    check_quota,
    latest,
    millis,
)

__all__ = [
    "MemoryMessageStoreBackend",
    "MemoryNotificationStoreBackend",
    "MemoryUploadRegistryBackend",
]

_SWEEP_EVERY = 256  # writes between two sweeps of expired rooms / users
DEFAULT_MAX_ROOMS = 10_000
DEFAULT_MAX_USERS = 100_000


class _Rooms:
    """Each room's ``(time in ms, entry)`` pairs, oldest first: a message store's state."""

    def __init__(self) -> None:
        self.by_room: dict[str, deque[tuple[int, HistoryEntry]]] = {}
        self.writes = 0


class MemoryMessageStoreBackend:
    """History entries in process memory: the latest ``max_per_room`` of each room, none
    older than ``max_age`` seconds, in at most ``max_rooms`` rooms."""

    def __init__(
        self,
        *,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
        max_age: float = DEFAULT_MAX_AGE,
        max_rooms: int = DEFAULT_MAX_ROOMS,
    ) -> None:
        self.max_per_room = check_int(max_per_room, "max_per_room")
        self.max_age = check_seconds(max_age, "max_age")
        self.max_rooms = check_int(max_rooms, "max_rooms")
        self._state = _Rooms()

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
        max_age: float = DEFAULT_MAX_AGE,
        max_rooms: int = DEFAULT_MAX_ROOMS,
    ) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls(max_per_room=max_per_room, max_age=max_age, max_rooms=max_rooms)
        backend._state = shared_state(target, _Rooms)
        return backend

    def _cutoff(self, now: float) -> int:
        """Entries at or before this time (ms) are too old."""
        return millis(now) - millis(self.max_age)

    async def append(self, entry: HistoryEntry, now: float) -> None:
        """Save ``entry`` (the oldest goes when full, and whatever is too old)."""
        state = self._state
        # Re-inserted on every write: the dict's order is the least recently written first.
        room = state.by_room.pop(entry.room_id, None) or deque(maxlen=self.max_per_room)
        state.by_room[entry.room_id] = room
        room.append((millis(now), entry))
        while len(state.by_room) > self.max_rooms:
            del state.by_room[next(iter(state.by_room))]
        cutoff = self._cutoff(now)
        while room and room[0][0] <= cutoff:
            room.popleft()
        state.writes += 1
        if state.writes % _SWEEP_EVERY == 0:
            for room_id in [r for r, q in state.by_room.items() if not q or q[-1][0] <= cutoff]:
                del state.by_room[room_id]

    async def history(
        self, room_id: str, before: str | None, limit: int, now: float, kinds: Set[str]
    ) -> list[HistoryEntry]:
        """The latest ``limit`` live entries of ``kinds`` in ``room_id`` older than ``before``."""
        room = self._state.by_room.get(room_id)
        if room is None:
            return []
        cutoff = self._cutoff(now)
        live = (entry for at, entry in reversed(room) if at > cutoff)
        return latest(live, before, limit, kinds)

    async def close(self) -> None:
        """Nothing to release."""


class _Users:
    """Each user's pending notifications and when the last one came: a store's state."""

    def __init__(self) -> None:
        self.by_user: dict[str, tuple[int, deque[Notification]]] = {}
        self.writes = 0


class MemoryNotificationStoreBackend:
    """Pending notifications in process memory, the latest ``max_per_user`` per user,
    kept ``ttl`` seconds after the last one arrived (as a Redis list's expiry), for at
    most ``max_users`` users."""

    def __init__(
        self,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        ttl: float = DEFAULT_NOTIFICATION_TTL,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        self.max_per_user = check_int(max_per_user, "max_per_user")
        self.ttl = check_seconds(ttl, "ttl")
        self.max_users = check_int(max_users, "max_users")
        self._state = _Users()

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        ttl: float = DEFAULT_NOTIFICATION_TTL,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls(max_per_user=max_per_user, ttl=ttl, max_users=max_users)
        backend._state = shared_state(target, _Users)
        return backend

    def _live(self, user_id: str, now: float) -> deque[Notification] | None:
        entry = self._state.by_user.get(user_id)
        if entry is None:
            return None
        if entry[0] + millis(self.ttl) <= millis(now):
            del self._state.by_user[user_id]
            return None
        return entry[1]

    async def push(self, notification: Notification, now: float) -> None:
        """Keep ``notification`` for its recipient (the oldest is dropped when full)."""
        user_id = notification.to_user_id
        queue = self._live(user_id, now) or deque(maxlen=self.max_per_user)
        queue.append(notification)
        state = self._state
        state.by_user.pop(user_id, None)  # re-inserted: least recently written first
        state.by_user[user_id] = (millis(now), queue)
        while len(state.by_user) > self.max_users:
            del state.by_user[next(iter(state.by_user))]
        state.writes += 1
        if state.writes % _SWEEP_EVERY == 0:
            for user in list(state.by_user):
                self._live(user, now)

    async def take(self, user_id: str, now: float) -> list[Notification]:
        """Remove and return the live notifications kept for ``user_id``, oldest first."""
        queue = self._live(user_id, now)
        self._state.by_user.pop(user_id, None)
        return list(queue or ())

    async def close(self) -> None:
        """Nothing to release."""


class _Uploads:
    """Records, their expiry (ms), the claimed ids and the usage: a registry's state."""

    def __init__(self) -> None:
        self.records: dict[str, UploadRecord] = {}
        self.expires: dict[str, int] = {}
        self.queue: list[tuple[int, str]] = []  # (expires, id), stale entries skipped
        self.claimed: set[str] = set()
        self.used: dict[str, tuple[int, int]] = {}  # user -> (bytes, uploads)
        self.total = 0


class MemoryUploadRegistryBackend:
    """Upload records in process memory: they expire (``pending_ttl``, then
    ``complete_ttl``) and at most ``max_records`` are kept (the soonest to expire
    are forgotten first)."""

    def __init__(
        self,
        *,
        pending_ttl: float = DEFAULT_PENDING_TTL,
        complete_ttl: float = DEFAULT_COMPLETE_TTL,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        self._pending_ms = millis(check_seconds(pending_ttl, "pending_ttl"))
        self._complete_ms = millis(check_seconds(complete_ttl, "complete_ttl"))
        self.max_records = check_int(max_records, "max_records")
        self._state = _Uploads()

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        pending_ttl: float = DEFAULT_PENDING_TTL,
        complete_ttl: float = DEFAULT_COMPLETE_TTL,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        backend = cls(pending_ttl=pending_ttl, complete_ttl=complete_ttl, max_records=max_records)
        backend._state = shared_state(target, _Uploads)
        return backend

    # ------------------------------------------------------------ bookkeeping

    def _expire_at(self, upload_id: str, at: int) -> None:
        self._state.expires[upload_id] = at
        heapq.heappush(self._state.queue, (at, upload_id))

    def _forget(self, upload_id: str) -> None:
        state = self._state
        record = state.records.pop(upload_id, None)
        state.expires.pop(upload_id, None)
        state.claimed.discard(upload_id)
        if record is None:
            return
        size, count = state.used.get(record.user_id, (0, 0))
        if count <= 1:
            state.used.pop(record.user_id, None)
        else:
            state.used[record.user_id] = (size - record.file_size, count - 1)
        state.total -= record.file_size

    def _next(self) -> tuple[int, str] | None:
        """The soonest expiry still current (stale queue entries are dropped)."""
        state = self._state
        while state.queue:
            at, upload_id = state.queue[0]
            if state.expires.get(upload_id) == at:
                return at, upload_id
            heapq.heappop(state.queue)
        return None

    def _alive(self, upload_id: str, now: float) -> UploadRecord | None:
        record = self._state.records.get(upload_id)
        if record is None or self._state.expires[upload_id] <= millis(now):
            return None
        return record

    # ------------------------------------------------------------ operations

    async def create(self, record: UploadRecord, quota: UploadQuota, now: float) -> None:
        """Register a new pending upload within ``quota`` (``QuotaExceeded`` otherwise)."""
        await self.purge_expired(now, 100)
        state = self._state
        if record.upload_id in state.records:
            self._forget(record.upload_id)
        check_quota(quota, *state.used.get(record.user_id, (0, 0)), state.total, record.file_size)
        while len(state.records) >= self.max_records and (soonest := self._next()):
            self._forget(soonest[1])
        state.records[record.upload_id] = record
        self._expire_at(record.upload_id, millis(now) + self._pending_ms)
        size, count = state.used.get(record.user_id, (0, 0))
        state.used[record.user_id] = (size + record.file_size, count + 1)
        state.total += record.file_size

    async def get(self, upload_id: str, now: float) -> UploadRecord | None:
        """The live record of ``upload_id``, or ``None``."""
        return self._alive(upload_id, now)

    async def claim(self, upload_id: str, now: float) -> UploadRecord | None:
        """Take a live pending upload for transfer."""
        record = self._alive(upload_id, now)
        if record is None or record.complete or upload_id in self._state.claimed:
            return None
        self._state.claimed.add(upload_id)
        return record

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back."""
        self._state.claimed.discard(upload_id)

    async def complete(self, upload_id: str, now: float) -> UploadRecord:
        """Mark a claimed upload complete (kept ``complete_ttl`` from now)."""
        record = self._alive(upload_id, now)
        if record is None:
            raise NotFound(f"upload {upload_id!r} is unknown or expired")
        done = record.model_copy(update={"complete": True})
        self._state.records[upload_id] = done
        self._state.claimed.discard(upload_id)
        self._expire_at(upload_id, millis(now) + self._complete_ms)
        return done

    async def usage(self, user_id: str | None, now: float) -> UploadUsage:
        """Bytes and uploads of ``user_id`` (``None``: everyone), expired ones purged first."""
        while await self.purge_expired(now, 1000):
            pass
        if user_id is None:
            return UploadUsage(self._state.total, len(self._state.records))
        return UploadUsage(*self._state.used.get(user_id, (0, 0)))

    async def known(self, upload_ids: Sequence[str], now: float) -> set[str]:
        """The ids among ``upload_ids`` with a live record."""
        return {i for i in upload_ids if self._alive(i, now) is not None}

    async def purge_expired(self, now: float, limit: int) -> list[str]:
        """Forget up to ``limit`` expired records, soonest first."""
        gone: list[str] = []
        cutoff = millis(now)
        while len(gone) < limit and (soonest := self._next()) and soonest[0] <= cutoff:
            self._forget(soonest[1])
            gone.append(soonest[1])
        return gone

    async def close(self) -> None:
        """Nothing to release."""
