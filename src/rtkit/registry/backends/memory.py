"""The in-process registry backend: the executable specification of the contract.

``memory://`` keeps the instances private to one registry; every registry opened
on ``memory://NAME`` (same prefix) shares them, watchers included, like several
processes on one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Self

from ..._core.clock import Clock, SystemClock
from ..._core.memory import shared_state
from ..._core.urls import BackendTarget
from .._models import Record, ServiceInstance
from .base import ChangeWaiter

__all__ = ["MemoryRegistryBackend"]


@dataclass
class _Entry:
    record: Record
    instance: ServiceInstance


class _EventWaiter:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class _RegistryState:
    """What registries on one ``memory://NAME`` share."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, _Entry]] = {}
        self.watchers: dict[str, set[_EventWaiter]] = {}


class MemoryRegistryBackend:
    """Service instances in this process's memory (``memory://``, ``memory://NAME``).

    Args:
        state: The shared state (``open`` passes it); ``None`` for a private one.
        clock: Where time comes from (default: the system clock).
    """

    def __init__(self, state: _RegistryState | None = None, *, clock: Clock | None = None) -> None:
        self._state = state if state is not None else _RegistryState()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._waiters: set[_EventWaiter] = set()  # this backend's, woken on close

    @classmethod
    def open(cls, target: BackendTarget) -> Self:
        """The backend for ``memory://`` (private) or ``memory://NAME`` (shared)."""
        return cls(shared_state(target, _RegistryState), clock=target.clock)

    def _notify(self, name: str) -> None:
        for waiter in self._state.watchers.get(name, ()):
            waiter.event.set()

    def _prune(self, name: str) -> dict[str, _Entry]:
        services = self._state.services
        entries = services.get(name, {})
        now = self._clock.time()
        dead = [iid for iid, e in entries.items() if e.instance.expires_at <= now]
        for iid in dead:
            del entries[iid]
        if not entries:
            services.pop(name, None)
        if dead:
            self._notify(name)
        return entries

    async def upsert(self, record: Record, ttl: float) -> None:
        """Add ``record`` or extend its life to now + ``ttl``."""
        entries = self._prune(record.name)
        now = self._clock.time()
        entry = entries.get(record.instance_id)
        if entry is not None:
            entry.instance = record.instance(entry.instance.registered_at, now + ttl)
            return
        self._state.services.setdefault(record.name, {})[record.instance_id] = _Entry(
            record, record.instance(now, now + ttl)
        )
        self._notify(record.name)

    async def remove(self, name: str, instance_id: str) -> bool:
        """Delete one instance; say whether it was live."""
        entries = self._prune(name)
        if entries.pop(instance_id, None) is None:
            return False
        if not entries:
            self._state.services.pop(name, None)
        self._notify(name)
        return True

    async def live(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name``."""
        return [e.instance for e in self._prune(name).values()]

    async def counts(self) -> dict[str, int]:
        """The live count of every service with live instances."""
        for name in list(self._state.services):
            self._prune(name)
        return {name: len(entries) for name, entries in self._state.services.items()}

    @contextlib.asynccontextmanager
    async def changes(self, name: str) -> AsyncIterator[ChangeWaiter]:
        """Wake the waiter whenever an instance of ``name`` comes or goes."""
        waiter = _EventWaiter()
        watchers = self._state.watchers
        watchers.setdefault(name, set()).add(waiter)
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)
            watchers[name].discard(waiter)
            if not watchers[name]:
                del watchers[name]

    async def close(self) -> None:
        """Wake this backend's waiters; the instances stay for other holders of the state."""
        for waiter in self._waiters:
            waiter.event.set()
