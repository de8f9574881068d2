"""The realtime stores on Redis, shared by every server instance.

* history: one Redis Stream per room (``messages.lua``) of chat messages, file
  shares, joins and leaves: about ``max_per_room`` entries (``MAXLEN ~``), none
  older than ``max_age`` (``MINID ~``, and reads skip what approximate trimming
  left), the stream expiring ``max_age`` after its last entry;
* notifications: one list per user, trimmed to ``max_per_user`` and expiring
  ``ttl`` seconds after the last push;
* uploads: one JSON string per upload under its own hash tag (a ``SET NX`` key
  beside it claims a transfer), and a quota ledger (``uploads.lua``: the expiry
  index and the usage counters, changed together atomically) under the
  deployment's shared tag.

Keys follow :class:`~rtkit._core.redis.Keyspace`: one hash tag per room, user and
upload, holding the prefix, so the stores spread over a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any, Self

import redis.asyncio as aioredis

from ...._core.lifecycle import DEFAULT_TIMEOUT
from ...._core.redis import Keyspace, RedisHandle, load_lua, redis_unavailable
from ...._core.urls import BackendTarget
from ...._core.validate import check_int, check_seconds
from ....errors import NotFound
from ..._protocol import HistoryEntry, Notification, entry_from_json
from .base import (
    DEFAULT_COMPLETE_TTL,
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_PER_ROOM,
    DEFAULT_MAX_PER_USER,
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
    "RedisMessageStoreBackend",
    "RedisNotificationStoreBackend",
    "RedisUploadRegistryBackend",
]

_PURGE_BATCH = 1000
_PACKAGE = "rtkit.realtime.stores"  # its resources/ hold the Lua scripts


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
    """History entries in one Redis Stream per room, kept by length and by age."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        super().__init__(handle, prefix, "messages")
        self.max_per_room = check_int(max_per_room, "max_per_room")
        self.max_age = check_seconds(max_age, "max_age")
        self._append = handle.client.register_script(load_lua(_PACKAGE, "messages.lua"))

    @classmethod
    def open(
        cls,
        target: BackendTarget,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_per_room: int = DEFAULT_MAX_PER_ROOM,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> Self:
        """The backend on ``target``'s Redis (its client borrowed when given)."""
        handle = RedisHandle.open(target, timeout=timeout)
        return cls(handle, prefix=target.prefix, max_per_room=max_per_room, max_age=max_age)

    async def append(self, entry: HistoryEntry, now: float) -> None:
        """Add the entry to its room's stream and apply the retention (one script)."""
        with redis_unavailable("saving to a room's history"):
            await self._append(
                keys=[self._keys.entity_key(entry.room_id, "stream")],
                args=[
                    entry.model_dump_json(by_alias=True),
                    millis(now),
                    self.max_per_room,
                    millis(self.max_age),
                ],
            )

    async def history(
        self, room_id: str, before: str | None, limit: int, now: float, kinds: Set[str]
    ) -> list[HistoryEntry]:
        """The latest ``limit`` live entries of ``kinds`` in ``room_id`` older than ``before``."""
        key = self._keys.entity_key(room_id, "stream")
        oldest = str(millis(now) - millis(self.max_age) + 1)  # entries before it are too old
        newest_first: list[HistoryEntry] = []
        end = "+"
        count = limit + 50
        with redis_unavailable("reading chat history"):
            while len(newest_first) < limit:
                batch: Any = await self._redis.xrevrange(key, max=end, min=oldest, count=count)
                entries = [entry_from_json(fields["m"]) for _, fields in batch]
                wanted = limit - len(newest_first)
                newest_first.extend(reversed(latest(entries, before, wanted, kinds)))
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
        self._ttl_ms = millis(check_seconds(ttl, "ttl"))

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

    async def push(self, notification: Notification, now: float) -> None:
        """``RPUSH`` + ``LTRIM`` + ``PEXPIRE`` in one transaction (Redis keeps the time)."""
        key = self._keys.entity_key(notification.to_user_id, "list")
        with redis_unavailable("saving a notification"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, notification.model_dump_json(by_alias=True))
                pipe.ltrim(key, -self.max_per_user, -1)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    async def take(self, user_id: str, now: float) -> list[Notification]:
        """``LRANGE`` + ``DEL`` in one transaction: each notification is taken once."""
        key = self._keys.entity_key(user_id, "list")
        with redis_unavailable("taking notifications"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                raw, _ = await pipe.execute()
        return [Notification.model_validate_json(item) for item in raw]


class RedisUploadRegistryBackend(_RedisBackend):
    """Upload records under their own hash tags; the quota ledger (``uploads.lua``: expiry
    index, sizes, usage per user and in total) under the deployment's shared tag.

    The ledger is what a deployment-wide quota must check atomically, so it lives on one
    slot; each operation changes it with one script call, then writes or deletes the
    records it concerns (one slot per upload): ``create`` costs two round trips, ``get``
    one pipelined round trip per node (record and ledger entry).
    """

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str,
        pending_ttl: float = DEFAULT_PENDING_TTL,
        complete_ttl: float = DEFAULT_COMPLETE_TTL,
    ) -> None:
        super().__init__(handle, prefix, "uploads")
        self._pending_ms = millis(check_seconds(pending_ttl, "pending_ttl"))
        self._complete_ms = millis(check_seconds(complete_ttl, "complete_ttl"))
        self._script = handle.client.register_script(load_lua(_PACKAGE, "uploads.lua"))
        keys = self._keys
        self._ledger = [keys.shared_key(part) for part in ("expiry", "sizes", "used", "total")]
        self._index = self._ledger[0]

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

    def _record(self, upload_id: str) -> str:
        return self._keys.entity_key(upload_id)

    async def _run(self, doing: str, op: str, now: float, *args: Any) -> Any:
        with redis_unavailable(doing):
            return await self._script(keys=self._ledger, args=[op, millis(now), *args])

    async def _drop(self, upload_ids: Sequence[str]) -> None:
        """Delete the records (and claims) the ledger forgot: one round trip per node."""
        if not upload_ids:
            return
        with redis_unavailable("deleting expired uploads"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for upload_id in upload_ids:
                    pipe.delete(self._record(upload_id), self._record(upload_id) + ":claim")
                await pipe.execute()

    async def create(self, record: UploadRecord, quota: UploadQuota, now: float) -> None:
        """Reserve the upload within ``quota`` (ledger), then write its record."""
        bounds = (quota.user_bytes, quota.total_bytes, quota.user_uploads)
        ok, used, count, total, forgotten = await self._run(
            "registering an upload",
            "create",
            now,
            record.upload_id,
            record.user_id,
            record.file_size,
            self._pending_ms,
            *("" if bound is None else bound for bound in bounds),
        )
        await self._drop(forgotten)
        if not ok:
            check_quota(quota, int(used), int(count), int(total), record.file_size)
        with redis_unavailable("registering an upload"):
            await self._redis.set(
                self._record(record.upload_id), record.model_dump_json(), px=self._pending_ms
            )

    async def _read(self, upload_ids: Sequence[str], now: float) -> list[UploadRecord | None]:
        with redis_unavailable("reading uploads"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for upload_id in upload_ids:
                    pipe.get(self._record(upload_id))
                    pipe.zscore(self._index, upload_id)
                raw = await pipe.execute()
        found: list[UploadRecord | None] = []
        for record, expires in zip(raw[::2], raw[1::2], strict=True):
            # a record the ledger no longer lists is gone (its delete may not have happened)
            alive = record is not None and expires is not None and expires > millis(now)
            found.append(UploadRecord.model_validate_json(record) if alive else None)
        return found

    async def get(self, upload_id: str, now: float) -> UploadRecord | None:
        """The live record of ``upload_id``, or ``None``."""
        return (await self._read([upload_id], now))[0]

    async def claim(self, upload_id: str, now: float) -> UploadRecord | None:
        """Take a live pending upload for transfer (``SET claim NX``)."""
        record = await self.get(upload_id, now)
        if record is None or record.complete:
            return None
        with redis_unavailable("claiming an upload"):
            ok = await self._redis.set(
                self._record(upload_id) + ":claim", "1", nx=True, px=self._pending_ms
            )
        return record if ok else None

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back."""
        with redis_unavailable("releasing an upload"):
            await self._redis.delete(self._record(upload_id) + ":claim")

    async def complete(self, upload_id: str, now: float) -> UploadRecord:
        """Mark a claimed upload complete (kept ``complete_ttl`` from now)."""
        record = await self.get(upload_id, now)
        if record is not None:
            done = record.model_copy(update={"complete": True})
            ttl = self._complete_ms
            if await self._run("completing an upload", "complete", now, upload_id, ttl):
                key = self._record(upload_id)
                with redis_unavailable("completing an upload"):
                    async with self._redis.pipeline(transaction=True) as pipe:  # one slot
                        pipe.set(key, done.model_dump_json(), px=self._complete_ms)
                        pipe.delete(key + ":claim")
                        await pipe.execute()
                return done
        raise NotFound(f"upload {upload_id!r} is unknown or expired")

    async def usage(self, user_id: str | None, now: float) -> UploadUsage:
        """Bytes and uploads of ``user_id`` (``None``: everyone), expired ones purged first."""
        while len(await self.purge_expired(now, _PURGE_BATCH)) == _PURGE_BATCH:
            pass
        used, count = await self._run("reading upload usage", "usage", now, user_id or "")
        return UploadUsage(int(used), int(count))

    async def known(self, upload_ids: Sequence[str], now: float) -> set[str]:
        """The ids among ``upload_ids`` with a live record."""
        found = await self._read(upload_ids, now) if upload_ids else []
        return {upload_id for upload_id, record in zip(upload_ids, found, strict=True) if record}

    async def purge_expired(self, now: float, limit: int) -> list[str]:
        """Forget up to ``limit`` expired records (and their quota usage), soonest first."""
        forgotten = list(await self._run("purging expired uploads", "purge", now, limit))
        await self._drop(forgotten)
        return forgotten
