"""The base of the stores whose entries belong to instances holding leases (see ``leases.py``)."""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .clock import Clock
from .component import Component
from .leases import LeaseBackend, check_instance_id
from .lifecycle import Janitor
from .validate import check_seconds

__all__ = ["EventPublisher", "LeasedStore"]

R = TypeVar("R")
D = TypeVar("D")


class EventPublisher(Protocol):
    """Anything with an async ``publish(name, data)``, such as `rtkit.EventBus`."""

    async def publish(self, name: str, data: dict[str, Any], /) -> object:
        """Publish the event ``name`` with payload ``data``."""
        ...


class LeasedStore(Component, Generic[R, D]):
    """Base of the stores whose entries belong to server instances holding leases.

    Subclasses call ``_configure()`` from their constructor and implement
    ``_beat()``; ``R`` is what their backend reports for each entry a purge
    removes, ``D`` what ``purge_expired()`` reports to users.

    Life cycle: ``_start()`` (run by ``start()`` or by the first operation)
    takes the lease with one purge pass and starts the janitor, which runs a
    pass every ``ttl / 3`` seconds; ``close()`` removes this instance's entries
    at once (when it started) and closes the backend.
    """

    _component: ClassVar[str]
    _backend: LeaseBackend[R]

    def _configure(
        self,
        backend: LeaseBackend[R],
        *,
        instance_id: str | None,
        ttl: float,
        clock: Clock | None,
        bus: EventPublisher | None,
    ) -> None:
        """Check the arguments every leased store takes (``ConfigurationError``)."""
        self.instance_id: str = check_instance_id(instance_id)
        self._bus = bus
        self.ttl: float = check_seconds(ttl, "ttl")
        self._backend = backend
        self._clock = clock
        self._janitor = Janitor(
            self._heartbeat, self.ttl / 3, f"{self._component}-{self.instance_id}"
        )
        self._leased = False  # whether this instance has taken its lease
        self._first_pass: list[D] = []  # what the pass of _start removed, for purge_expired
        self._skip_beat = False

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock.time()

    async def _start(self) -> None:
        """Take the lease and purge expired instances (one pass), then begin heartbeating."""
        self._first_pass = await self._beat()
        self._skip_beat = True
        self._janitor.start()

    async def _heartbeat(self) -> None:
        """The janitor's beat (its first comes at once, right after the pass of ``_start``)."""
        if self._skip_beat:
            self._skip_beat = False
            return
        await self._beat()

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

    async def _publish(self, name: str, data: dict[str, Any]) -> None:
        """Publish a transition on ``bus``; a failure is logged, never raised to the caller."""
        if self._bus is None:
            return
        try:
            await self._bus.publish(name, data)
        except Exception:
            logging.getLogger(f"rtkit.{self._component}").exception(
                "%s: could not publish %s", self._component, name
            )

    async def _released(self, removed: list[R]) -> None:
        """Hook: this instance's own entries were removed by ``close()``."""

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
    async def _beat(self) -> list[D]:
        """One purge pass and its reports (what ``purge_expired()`` runs)."""

    async def purge_expired(self) -> list[D]:
        """Run one purge pass now: renew this instance's lease, remove expired instances.

        The janitor does this every ``ttl / 3`` seconds. On a store that has not
        started yet, the pass that starts it is this one.

        Raises:
            rtkit.errors.Closed: The store was closed.
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        if self._started:
            self._check_open()
            return await self._beat()
        await self._ready()
        found, self._first_pass = self._first_pass, []
        return found
