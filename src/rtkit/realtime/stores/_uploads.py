"""``UploadRegistry``: the shared bookkeeping of announced uploads."""

from __future__ import annotations

from typing import ClassVar

from ..._core.clock import Clock
from ..._core.component import Component
from ..._core.validate import check_id
from .backends.base import UploadRecord, UploadRegistryBackend
from .backends.memory import MemoryUploadRegistryBackend

__all__ = ["UploadRegistry"]


class UploadRegistry(Component):
    """Which uploads were announced, and which of them are in transfer or complete.

    ``file:upload:start`` creates an [`UploadRecord`][rtkit.realtime.UploadRecord];
    the uploader then ``PUT``s the bytes to any instance, which claims the
    record, stores the bytes in a [`FileStore`][rtkit.realtime.FileStore] and
    marks it complete. An upload is *pending* after :meth:`create`, *claimed* by
    the one request that :meth:`claim` returned it to, then *complete*
    (:meth:`complete`) or pending again (:meth:`release`).

    ``UploadRegistry()`` keeps records in this process;
    ``UploadRegistry.from_url("redis://...")`` keeps them in Redis, expiring
    (``pending_ttl``: an hour, ``complete_ttl``: 30 days; also ``timeout``).

    Args:
        backend: Where records are kept (default: a private memory backend).
        clock: Accepted for the shape every component shares; the registry keeps no time.
    """

    _backends: ClassVar = {
        "memory": "rtkit.realtime.stores.backends.memory:MemoryUploadRegistryBackend",
        "redis": "rtkit.realtime.stores.backends.redis:RedisUploadRegistryBackend",
    }

    def __init__(
        self, backend: UploadRegistryBackend | None = None, *, clock: Clock | None = None
    ) -> None:
        self._backend = backend if backend is not None else MemoryUploadRegistryBackend()

    async def _close(self) -> None:
        await self._backend.close()

    async def create(self, record: UploadRecord) -> None:
        """Register a new pending upload."""
        await self._ready()
        check_id(record.upload_id, "upload_id")
        await self._backend.create(record)

    async def get(self, upload_id: str) -> UploadRecord | None:
        """The record of ``upload_id``, or ``None`` if unknown or expired."""
        await self._ready()
        return await self._backend.get(check_id(upload_id, "upload_id"))

    async def claim(self, upload_id: str) -> UploadRecord | None:
        """Atomically take a pending upload for transfer; ``None`` if unknown, busy or done."""
        await self._ready()
        return await self._backend.claim(check_id(upload_id, "upload_id"))

    async def release(self, upload_id: str) -> None:
        """Give a claimed upload back (its transfer failed)."""
        await self._ready()
        await self._backend.release(check_id(upload_id, "upload_id"))

    async def complete(self, upload_id: str) -> UploadRecord:
        """Mark a claimed upload complete and return its record.

        Raises:
            rtkit.errors.NotFound: The record is unknown or expired.
        """
        await self._ready()
        return await self._backend.complete(check_id(upload_id, "upload_id"))
