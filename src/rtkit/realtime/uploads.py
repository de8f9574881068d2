"""File uploads announced over Socket.IO and transferred over HTTP.

``file:upload:start`` creates an [`UploadRecord`][rtkit.realtime.UploadRecord] in an
[`UploadRegistry`][rtkit.realtime.UploadRegistry] (shared through Redis, so the
``PUT`` may reach any instance); the uploader then ``PUT``s exactly the announced
number of bytes, which a [`FileStore`][rtkit.realtime.FileStore] keeps
([`LocalFileStore`][rtkit.realtime.LocalFileStore], a folder, by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from .._backends import (
    DEFAULT_PREFIX,
    Keyspace,
    RedisHandle,
    backend_kind,
    check_prefix,
    redis_unavailable,
)
from .._validation import check_id
from ..errors import NotFound, ValidationError

__all__ = [
    "FileStore",
    "LocalFileStore",
    "MemoryUploadRegistry",
    "RedisUploadRegistry",
    "UploadRecord",
    "UploadRegistry",
]

_CHUNK = 64 * 1024


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


@runtime_checkable
class UploadRegistry(Protocol):
    """Shared bookkeeping of announced uploads.

    An upload is *pending* after :meth:`create`, *claimed* by the one request
    that :meth:`claim` returned it to, then *complete* (:meth:`complete`) or
    pending again (:meth:`release`).
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
        """Mark a claimed upload complete and return its record."""
        ...

    async def close(self) -> None:
        """Release the backend's resources."""
        ...


class MemoryUploadRegistry:
    """Upload records in process memory."""

    def __init__(self) -> None:
        self._records: dict[str, UploadRecord] = {}
        self._claimed: set[str] = set()

    async def create(self, record: UploadRecord) -> None:
        """Register a new pending upload."""
        self._records[record.upload_id] = record

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None``."""
        return self._records.get(upload_id)

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Take a pending upload for transfer."""
        record = self._records.get(upload_id)
        if record is None or record.complete or upload_id in self._claimed:
            return None
        self._claimed.add(upload_id)
        return record

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back."""
        self._claimed.discard(upload_id)

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete."""
        record = self._records[upload_id].model_copy(update={"complete": True})
        self._records[upload_id] = record
        self._claimed.discard(upload_id)
        return record

    async def close(self) -> None:
        """Nothing to release."""


class RedisUploadRegistry:
    """Upload records as Redis strings (JSON) that expire; a ``SET NX`` key claims a transfer."""

    def __init__(
        self,
        handle: RedisHandle,
        *,
        prefix: str = DEFAULT_PREFIX,
        pending_ttl: float = 3600.0,
        complete_ttl: float = 30 * 24 * 3600.0,
    ) -> None:
        self._handle = handle
        self._keys = Keyspace(check_prefix(prefix), "uploads")
        self._pending_ms = int(pending_ttl * 1000)
        self._complete_ms = int(complete_ttl * 1000)

    @property
    def _redis(self) -> aioredis.Redis:
        return self._handle.client

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

    async def close(self) -> None:
        """Close the Redis client if this registry owns it."""
        await self._handle.close()


def upload_registry_from_url(
    url: str = "memory://", *, prefix: str = DEFAULT_PREFIX, redis: aioredis.Redis | None = None
) -> UploadRegistry:
    """An [`UploadRegistry`][rtkit.realtime.UploadRegistry] for ``url``."""
    if backend_kind(url, component="UploadRegistry") == "memory":
        return MemoryUploadRegistry()
    handle = RedisHandle(url, client=redis)
    return RedisUploadRegistry(handle, prefix=prefix)


@runtime_checkable
class FileStore(Protocol):
    """Keeps uploaded files' bytes."""

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


class LocalFileStore:
    """Files in a local folder, one file per upload id, written atomically.

    Several instances on one host may share the folder.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, upload_id: str) -> Path:
        check_id(upload_id, "upload_id")
        if not all(c.isalnum() or c == "-" for c in upload_id):
            raise ValidationError("upload_id may contain only letters, digits and '-'")
        return self.directory / upload_id

    async def save(self, upload_id: str, chunks: AsyncIterator[bytes], *, size: int) -> None:
        """Write to a temporary file, check the size, then rename into place."""
        target = self._path(upload_id)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".upload-")
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise ValidationError(f"the body is longer than the announced {size} bytes")
                    await asyncio.to_thread(out.write, chunk)
            if written != size:
                raise ValidationError(
                    f"the body has {written} bytes but {size} bytes were announced"
                )
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def open(self, upload_id: str) -> AsyncIterator[bytes]:
        """Read the file back in chunks."""
        path = self._path(upload_id)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} has no stored file") from exc
        with handle:
            while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                yield chunk
