"""The in-process registry: the executable specification of the contract."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .._clock import Clock
from .base import ServiceInstance, ServiceRegistry, _Record, _Waiter

__all__ = ["MemoryServiceRegistry"]


@dataclass
class _Entry:
    record: _Record
    instance: ServiceInstance


class _EventWaiter(_Waiter):
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class MemoryServiceRegistry(ServiceRegistry):
    """A `ServiceRegistry` in this process's memory (``memory://``)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        prune_interval: float = 5.0,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__(clock=clock, prune_interval=prune_interval, poll_interval=poll_interval)
        self._services: dict[str, dict[str, _Entry]] = {}
        self._watchers: dict[str, set[_EventWaiter]] = {}

    def _notify(self, name: str) -> None:
        for waiter in self._watchers.get(name, ()):
            waiter.event.set()

    def _prune(self, name: str) -> dict[str, _Entry]:
        entries = self._services.get(name, {})
        now = self._clock.time()
        dead = [iid for iid, e in entries.items() if e.instance.expires_at <= now]
        for iid in dead:
            del entries[iid]
        if not entries:
            self._services.pop(name, None)
        if dead:
            self._notify(name)
        return entries

    async def _upsert(self, record: _Record, ttl: float) -> None:
        entries = self._prune(record.name)
        now = self._clock.time()
        entry = entries.get(record.instance_id)
        if entry is not None:
            entry.instance = record.instance(entry.instance.registered_at, now + ttl)
            return
        self._services.setdefault(record.name, {})[record.instance_id] = _Entry(
            record, record.instance(now, now + ttl)
        )
        self._notify(record.name)

    async def _remove(self, name: str, instance_id: str) -> bool:
        entries = self._prune(name)
        if entries.pop(instance_id, None) is None:
            return False
        if not entries:
            self._services.pop(name, None)
        self._notify(name)
        return True

    async def _live(self, name: str) -> list[ServiceInstance]:
        entries = self._prune(name)
        return [e.instance for e in entries.values()]

    async def _counts(self) -> dict[str, int]:
        for name in list(self._services):
            self._prune(name)
        return {name: len(entries) for name, entries in self._services.items()}

    async def _close_backend(self) -> None:
        self._services.clear()

    @contextlib.asynccontextmanager
    async def _changes(self, name: str) -> AsyncIterator[_Waiter]:
        waiter = _EventWaiter()
        self._watchers.setdefault(name, set()).add(waiter)
        try:
            yield waiter
        finally:
            watchers = self._watchers[name]
            watchers.discard(waiter)
            if not watchers:
                del self._watchers[name]
