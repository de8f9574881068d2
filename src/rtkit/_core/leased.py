"""The base of the stores whose entries belong to instances holding leases (see ``leases.py``).

Each instance is the authority on its own connections. A store keeps, locally,
what its instance holds for each sid (``_held``) and the digest of it; the
backend keeps the same digest per instance, updated by every transition. So
when a call's outcome is unknown (a time-out whose script ran after all, or
never ran), or the backend lost data (a restart, a purge while this instance
was paused), the two disagree, and the heartbeat puts the backend right:

1. the sids whose last call failed with an unknown outcome (*suspects*) are
   repaired: the backend is made to hold exactly what the instance holds for
   them (one round trip per 500 sids);
2. the digests are compared (one round trip), leaving out the sids with a call
   in flight and the suspects; when they differ, the whole listing of what the
   backend holds for this instance is read and every sid that disagrees is
   repaired: O(connections of this instance), in a few round trips.

A transition waits while the comparison's round trip is in flight, so that no
call can land on the backend between the snapshot and the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ..errors import BackendUnavailable, RtkitError
from .clock import Clock
from .component import Component
from .leases import Digest, LeaseBackend, check_instance_id
from .lifecycle import Janitor
from .validate import check_seconds

__all__ = ["REPAIR_BATCH", "EventPublisher", "LeasedStore"]

R = TypeVar("R")
D = TypeVar("D")
H = TypeVar("H")
V = TypeVar("V")

REPAIR_BATCH = 500
"""Sids repaired per backend call."""


class EventPublisher(Protocol):
    """Anything with an async ``publish(name, data)``, such as `rtkit.EventBus`."""

    async def publish(self, name: str, data: dict[str, Any], /) -> object:
        """Publish the event ``name`` with payload ``data``."""
        ...


class LeasedStore(Component, Generic[R, D, H, V]):
    """Base of the stores whose entries belong to server instances holding leases.

    Subclasses call ``_configure()`` from their constructor and implement
    ``_beat()``, ``_items()``, ``_matches()`` and ``_restore()``; ``R`` is what
    their backend reports for each entry it removes, ``D`` what
    ``purge_expired()`` reports to users, ``H`` what the instance holds for one
    sid, ``V`` what the backend's ``held`` listing gives for one sid.

    Life cycle: ``_start()`` (run by ``start()`` or by the first operation)
    takes the lease with one purge pass and starts the janitor, which runs a
    pass every ``ttl / 3`` seconds; ``close()`` removes this instance's entries
    at once (when it started) and closes the backend.
    """

    _component: ClassVar[str]
    _backend: LeaseBackend[R, V]

    def _configure(
        self,
        backend: LeaseBackend[R, V],
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
        self._held: dict[str, H] = {}  # sid -> what this instance holds for it
        self._digest = Digest()  # of everything in _held
        self._busy: dict[str, int] = {}  # sid -> calls in flight for it
        self._suspects: dict[str, int] = {}  # sid -> mark of its last unknown outcome
        self._departed: set[str] = set()  # busy sids that departed while others were in flight
        self._marks = 0
        self._gate: asyncio.Event | None = None  # set while digests are compared
        self._passes = asyncio.Lock()  # one purge pass at a time (janitor, purge_expired)
        self._log = logging.getLogger(f"rtkit.{self._component}")

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
            self._held.clear()
            self._digest = Digest()
            self._suspects.clear()
            await self._backend.close()

    async def _publish(self, name: str, data: dict[str, Any]) -> None:
        """Publish a transition on ``bus``; a failure is logged, never raised to the caller."""
        if self._bus is None:
            return
        try:
            await self._bus.publish(name, data)
        except Exception:
            self._log.exception("%s: could not publish %s", self._component, name)

    async def _released(self, removed: list[R]) -> None:
        """Hook: this instance's own entries were removed by ``close()``."""

    # -- what this instance holds -------------------------------------------------------------

    @abstractmethod
    def _items(self, sid: str, held: H) -> Iterable[str]:
        """The digest items of what this instance holds for ``sid``."""

    @abstractmethod
    def _matches(self, view: V, held: H) -> bool:
        """Whether the backend's ``view`` of a sid is what this instance holds for it."""

    @abstractmethod
    async def _restore(self, entries: list[tuple[str, H | None]]) -> list[R]:
        """Make the backend hold exactly ``held`` for each ``(sid, held)`` (None: nothing).

        Returns what it removed; publishes whatever else the component announces.
        """

    def _hold(self, sid: str, held: H | None) -> None:
        """Record what this instance holds for ``sid`` from now on (None: nothing)."""
        old = self._held.pop(sid, None)
        if old is not None:
            for item in self._items(sid, old):
                self._digest.discard(item)
        if held is not None:
            self._held[sid] = held
            for item in self._items(sid, held):
                self._digest.add(item)

    @contextlib.asynccontextmanager
    async def _transition(self, sid: str) -> AsyncIterator[None]:
        """Around the backend call that changes ``sid``.

        Waits while digests are compared, marks ``sid`` busy, and makes it a
        suspect when the call fails without saying that nothing changed (a
        time-out, a lost connection, a cancellation: the script may have run).
        """
        while self._gate is not None:
            await self._gate.wait()
        self._busy[sid] = self._busy.get(sid, 0) + 1
        try:
            yield
        except BackendUnavailable:
            self._suspect(sid)
            raise
        except RtkitError:
            raise  # refused before anything changed (ValidationError, TooManyRooms)
        except BaseException:
            self._suspect(sid)
            raise
        finally:
            left = self._busy[sid] - 1
            if left:
                self._busy[sid] = left
            else:
                del self._busy[sid]
                self._departed.discard(sid)

    def _depart(self, sid: str) -> None:
        """In a departure's transition: ``sid`` is gone, whatever else is in flight for it.

        A join or connect of ``sid`` that is still in flight (a late event of a
        connection that just went away) then records nothing when it completes;
        the heartbeat removes whatever it did on the backend.
        """
        self._hold(sid, None)
        if self._busy.get(sid, 0) > 1:
            self._departed.add(sid)

    def _arrived(self, sid: str) -> bool:
        """Whether an arrival of ``sid`` that succeeded may be recorded (see ``_depart``)."""
        if sid in self._departed:
            self._suspect(sid)
            return False
        return True

    def _suspect(self, sid: str) -> None:
        self._marks += 1
        self._suspects[sid] = self._marks

    def _pending(self, sid: str, exc: BackendUnavailable) -> None:
        """A departure of ``sid`` could not reach the backend: the heartbeat completes it."""
        self._log.warning(
            "%s: could not remove %s from the backend now (%s); the heartbeat will retry",
            self._component,
            sid,
            exc,
        )

    # -- the heartbeat ------------------------------------------------------------------------

    async def _purge_pass(self) -> list[R]:
        """Renew this instance's lease, remove expired instances, reconcile this instance."""
        async with self._passes:
            return await self._one_pass()

    async def _one_pass(self) -> list[R]:
        found, missing = await self._backend.purge(self.instance_id, self._now(), self.ttl, None)
        if missing and self._leased:
            self._log.warning(
                "%s: instance %s found its lease gone: it did not heartbeat for %.1f s "
                "(paused? disconnected from the backend?) or the backend lost its data; "
                "it puts its %d connection(s) back now",
                self._component,
                self.instance_id,
                self.ttl,
                len(self._held),
            )
        self._leased = True
        try:
            return found + await self._converge()
        except BackendUnavailable as exc:
            if not found:
                raise
            # report what the purge removed; the next pass reconciles
            self._log.warning("%s: could not reconcile this pass: %s", self._component, exc)
            return found

    async def _converge(self) -> list[R]:
        """Repair the suspects; compare digests, and reconcile everything when they differ."""
        in_sync = await self._check()
        removed = await self._repair_suspects()
        if not in_sync:
            removed += await self._reconcile()
        return removed

    async def _check(self) -> bool:
        exclude = sorted(self._busy.keys() | self._suspects.keys())
        expected = self._digest.copy()
        for sid in exclude:
            held = self._held.get(sid)
            if held is not None:
                for item in self._items(sid, held):
                    expected.discard(item)
        gate = self._gate = asyncio.Event()
        try:
            return await self._backend.check(self.instance_id, expected.text, exclude)
        finally:
            self._gate = None
            gate.set()

    async def _repair_suspects(self) -> list[R]:
        marks = {sid: mark for sid, mark in self._suspects.items() if sid not in self._busy}
        if not marks:
            return []
        removed = await self._repair(list(marks))
        for sid, mark in marks.items():
            if self._suspects.get(sid) == mark:  # no newer unknown outcome meanwhile
                del self._suspects[sid]
        return removed

    async def _reconcile(self) -> list[R]:
        """Read everything the backend holds for this instance; repair what disagrees."""
        seen: dict[str, V] = {}
        cursor: int | None = 0
        while cursor is not None:
            chunk, cursor = await self._backend.held(self.instance_id, cursor)
            seen.update(chunk)
        wrong = [
            sid
            for sid in seen.keys() | self._held.keys()
            if not self._agrees(seen.get(sid), self._held.get(sid))
        ]
        removed = await self._repair(wrong)
        if wrong:
            self._log.warning(
                "%s: instance %s found the backend out of step with its connections and "
                "repaired %d sid(s)",
                self._component,
                self.instance_id,
                len(wrong),
            )
        return removed

    def _agrees(self, view: V | None, held: H | None) -> bool:
        if view is None or held is None:
            return view is None and held is None
        return self._matches(view, held)

    async def _repair(self, sids: list[str]) -> list[R]:
        """Make the backend hold what this instance holds for ``sids`` (busy ones are skipped)."""
        # what is held goes back before what is not is taken away: fewer transitions
        ordered = sorted(sids, key=lambda sid: (sid not in self._held, sid))
        removed: list[R] = []
        for start in range(0, len(ordered), REPAIR_BATCH):
            batch = [sid for sid in ordered[start : start + REPAIR_BATCH] if sid not in self._busy]
            if batch:
                removed += await self._restore([(sid, self._held.get(sid)) for sid in batch])
        return removed

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
