"""``UploadRegistry``: the shared bookkeeping of announced uploads, their expiry and quotas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ..._core.clock import Clock, SystemClock
from ..._core.component import Component
from ..._core.validate import check_id, check_int
from ...errors import ValidationError
from .backends.base import UploadQuota, UploadRecord, UploadRegistryBackend, UploadUsage
from .backends.memory import MemoryUploadRegistryBackend

__all__ = ["UploadRegistry"]

MAX_BATCH = 1000
"""The most ids :meth:`UploadRegistry.known` and :meth:`UploadRegistry.purge_expired` take."""


class UploadRegistry(Component):
    """Which uploads were announced, which are in transfer or complete, and what they use.

    ``file:upload:start`` creates an [`UploadRecord`][rtkit.realtime.UploadRecord]
    (within an [`UploadQuota`][rtkit.realtime.UploadQuota], atomically); the
    uploader then ``PUT``s the bytes to any instance, which claims the record,
    stores the bytes in a [`FileStore`][rtkit.realtime.FileStore] and marks it
    complete. An upload is *pending* after :meth:`create`, *claimed* by the one
    request that :meth:`claim` returned it to, then *complete* (:meth:`complete`)
    or pending again (:meth:`release`).

    Records expire: a pending one ``pending_ttl`` seconds after it was announced
    (an hour), a complete one ``complete_ttl`` seconds after it completed (30
    days); an expired record is gone for every operation, and
    :meth:`purge_expired` forgets it (the server's janitor then deletes its
    file). ``UploadRegistry()`` keeps records in this process, at most
    ``max_records`` (100,000; the soonest to expire are forgotten first);
    ``UploadRegistry.from_url("redis://...")`` keeps them in Redis, shared by
    every instance. ``from_url`` takes these backend options and, on Redis, ``timeout``.

    Args:
        backend: Where records are kept (default: a private memory backend).
        clock: Where time comes from (default: the system clock).
    """

    _backends: ClassVar = {
        "memory": "rtkit.realtime.stores.backends.memory:MemoryUploadRegistryBackend",
        "redis": "rtkit.realtime.stores.backends.redis:RedisUploadRegistryBackend",
    }

    def __init__(
        self, backend: UploadRegistryBackend | None = None, *, clock: Clock | None = None
    ) -> None:
        self._backend = backend if backend is not None else MemoryUploadRegistryBackend()
        self._clock: Clock = clock or SystemClock()

    async def _close(self) -> None:
        await self._backend.close()

    def _now(self) -> float:
        return self._clock.time()

    async def create(self, record: UploadRecord, *, quota: UploadQuota | None = None) -> None:
        """Register a new pending upload, counted in ``quota`` (default: no bounds).

        Raises:
            rtkit.errors.QuotaExceeded: The upload would pass a bound of
                ``quota``; nothing was registered.
            rtkit.errors.ValidationError: A bad id or a negative size.
        """
        await self._ready()
        check_id(record.upload_id, "upload_id")
        check_id(record.user_id, "user_id")
        check_int(record.file_size, "file_size", minimum=0, error=ValidationError)
        await self._backend.create(record, quota or UploadQuota(), self._now())

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None`` if unknown or expired."""
        await self._ready()
        return await self._backend.get(check_id(upload_id, "upload_id"), self._now())

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Atomically take a pending upload for transfer; ``None`` if unknown, busy or done."""
        await self._ready()
        return await self._backend.claim(check_id(upload_id, "upload_id"), self._now())

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back (its transfer failed)."""
        await self._ready()
        await self._backend.release(check_id(upload_id, "upload_id"))

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete (kept ``complete_ttl`` from now) and return its record.

        Raises:
            rtkit.errors.NotFound: The record is unknown or expired.
        """
        await self._ready()
        return await self._backend.complete(check_id(upload_id, "upload_id"), self._now())

    async def usage(self, user_id: str | None = None) -> UploadUsage:
        """What the live uploads of ``user_id`` use (``None``: every upload of the registry)."""
        await self._ready()
        if user_id is not None:
            check_id(user_id, "user_id")
        return await self._backend.usage(user_id, self._now())

    async def known(self, upload_ids: Sequence[str]) -> set[str]:
        """Which of ``upload_ids`` (at most 1000) have a live record."""
        await self._ready()
        ids = [check_id(upload_id, "upload_id") for upload_id in upload_ids]
        check_int(len(ids), "len(upload_ids)", minimum=0, maximum=MAX_BATCH, error=ValidationError)
        return await self._backend.known(ids, self._now())

    async def purge_expired(self, limit: int = MAX_BATCH) -> list[str]:
        """Forget up to ``limit`` expired records and their quota usage; return their ids."""
        await self._ready()
        check_int(limit, "limit", maximum=MAX_BATCH, error=ValidationError)
        return await self._backend.purge_expired(self._now(), limit)
