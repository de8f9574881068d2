"""The base of the stores whose entries belong to instances holding leases (see ``leases.py``)."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .clock import Clock
from .component import Component
from .leases import check_instance_id
from .lifecycle import Janitor
from .validate import check_seconds

__all__ = ["LeaseBackend", "LeasedStore"]

R = TypeVar("R")


class LeaseBackend(Protocol[R]):
    """What :class:`LeasedStore` needs of its backend."""

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[R], bool]:
        """Renew ``instance_id``'s lease and remove expired instances (or ``force``'s entries).

        Also says whether ``instance_id``'s lease was missing before the renewal.
        """
        ...

    async def close(self) -> None:
        """Release the backend's connections."""
        ...


class LeasedStore(Component, Generic[R]):
    """Base of the stores whose entries belong to server instances holding leases.

    Subclasses call :meth:`_configure` from their constructor; ``R`` is what
    their backend reports for each entry a purge removes.
    """

    _component: ClassVar[str]
    _backend: LeaseBackend[R]

    def _configure(
        self, backend: LeaseBackend[R], *, instance_id: str | None, ttl: float, clock: Clock | None
    ) -> None:
        """Check the arguments every leased store takes."""
        self._backend = backend
        self.instance_id: str = check_instance_id(instance_id)
        self.ttl: float = check_seconds(ttl, "ttl")
        self._clock = clock
        self._janitor = Janitor(self._beat, self.ttl / 3, f"{self._component}-{self.instance_id}")
        self._leased = False  # whether this instance has taken its lease

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock.time()

    async def _start(self) -> None:
        """Take the lease, purge expired instances, begin heartbeating."""
        await self._beat()
        self._janitor.start()

    async def _close(self) -> None:
        """Stop heartbeating, remove this instance's entries now, release the backend."""
        await self._janitor.stop()
        try:
            if self._started:
                removed, _ = await self._backend.purge(
                    None, self._now(), self.ttl, self.instance_id
                )
                await self._released(removed)
        finally:
            await self._backend.close()

    async def _released(self, removed: list[R]) -> None:
        """Hook: this instance's own entries were removed by :meth:`close`."""

    async def _purge_pass(self) -> list[R]:
        """Renew this instance's lease and remove expired instances' entries."""
        found, missing = await self._backend.purge(self.instance_id, self._now(), self.ttl, None)
        if missing and self._leased:
            logging.getLogger(f"rtkit.{self._component}").warning(
                "%s: instance %s found its lease gone: it did not heartbeat for %.1f s "
                "(paused? disconnected from the backend?) and another instance purged what it "
                "held; clients connected through it are no longer listed until they reconnect",
                self._component,
                self.instance_id,
                self.ttl,
            )
        self._leased = True
        return found

    @abstractmethod
    async def _beat(self) -> list[Any]:
        """One purge pass and its reports (what :meth:`purge_expired` runs)."""

    async def purge_expired(self) -> list[Any]:
        """Run one purge pass now (the janitor does this every ``ttl / 3`` seconds)."""
        await self._ready()
        return await self._beat()
