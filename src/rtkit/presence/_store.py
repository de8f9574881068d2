"""PresenceStore: who is online, with several connections per user, across every instance."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._core.clock import Clock
from .._core.leased import EventPublisher, LeasedStore
from .._core.leases import DEFAULT_TTL, ITEM_SEPARATOR
from .._core.pages import Page
from .._core.validate import check_cursor, check_id, check_limit, check_meta
from ..errors import BackendUnavailable
from .backends.base import Holding, OnlineUser, PresenceBackend, PresenceCount, Removed
from .backends.memory import MemoryPresenceBackend

__all__ = ["Departure", "EventPublisher", "PresenceEvent", "PresenceStore"]

logger = logging.getLogger("rtkit.presence")


@dataclass(frozen=True)
class Departure:
    """A connection that was removed.

    ``offline`` is true when it was the user's last connection: the user went
    offline with it.
    """

    user_id: str
    sid: str
    offline: bool


class PresenceEvent(BaseModel):
    """The payload of the ``presence.online`` and ``presence.offline`` events.

    ``instance_id`` is the server instance that held the connection; ``time``
    is when the transition happened (epoch seconds).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    username: str | None
    instance_id: str
    time: float


@dataclass(frozen=True)
class _Held:
    """What this instance holds for one of its connections."""

    user_id: str
    meta: str | None  # compact JSON


def settle_departures(removed: list[Removed]) -> list[Removed]:
    """Order removals of one pass by (user, sid) and report ``offline`` on the user's last.

    Backends remove a dead instance's connections in whatever order they find
    them; this makes the report the same everywhere.
    """
    ordered = sorted(removed, key=lambda r: (r.user_id, r.sid))
    offline_users = {r.user_id for r in ordered if r.offline}
    last = {r.user_id: i for i, r in enumerate(ordered)}
    return [
        Removed(
            r.user_id,
            r.sid,
            r.user_id in offline_users and last[r.user_id] == i,
            r.username,
            r.instance_id,
            r.time,
        )
        for i, r in enumerate(ordered)
    ]


class PresenceStore(LeasedStore[Removed, Departure, _Held, str]):
    """Who is online: several connections per user, shared by every server instance.

    A user comes online with their first connection and goes offline with the
    last one; those two transitions are published on ``bus`` as
    ``presence.online`` / ``presence.offline`` (payload:
    [`PresenceEvent`][rtkit.presence.PresenceEvent]).

    Each store is one server instance (``instance_id``) holding a lease.
    Started (by ``start()``, ``async with`` or its first operation), it renews
    the lease every ``ttl / 3`` seconds and purges instances whose lease
    expired, so a crashed instance's connections are removed everywhere at most
    ``ttl + ttl / 3`` (less than ``2 * ttl``) seconds after its last heartbeat (plus the
    clock skew between instances when a ``clock`` is injected on Redis).
    ``close()`` removes this instance's connections at once; afterwards every
    operation raises [`Closed`][rtkit.errors.Closed] (``instance_id`` and
    ``ttl`` stay readable).

    The instance is the authority on its own connections: the store keeps them
    locally too, and its heartbeat puts the backend right when they disagree
    (a connect that timed out but ran after all, a disconnect that never
    arrived, a backend that lost its data, a purge while this instance was
    paused), at most ``ttl / 3`` seconds after the backend answers again.

    Args:
        backend: Where the data lives; ``None`` for a private memory backend.
            `PresenceStore.from_url` opens one from a URL: ``memory://``
            (private), ``memory://NAME`` (shared by every store opened with that
            name and prefix in this process) or a Redis URL (option
            ``timeout``: the bound on each round trip, 5 s by default).
        clock: Where time comes from. On Redis, without a clock the server's
            ``TIME`` is used, so instance clocks need not agree.
        instance_id: This server instance (a name of at most 64 characters,
            without ``:``); a new UUIDv7 by default. Give the same id to the
            process's [`RoomManager`][rtkit.rooms.RoomManager].
        ttl: Seconds a lease lives without a heartbeat (30 by default).
        bus: Where to publish presence transitions.

    Attributes:
        instance_id: This server instance's id (readable after ``close()``).
        ttl: The lease time-to-live in seconds (readable after ``close()``).

    Raises:
        rtkit.errors.ConfigurationError: A bad ``instance_id`` or ``ttl``.

    Example:
        ```python
        async with PresenceStore.from_url("redis://localhost:6379/0") as presence:
            if await presence.connect("42", "sid-a", username="ada"):
                ...  # ada just came online
        ```
    """

    _component = "presence"
    _backends = {
        "memory": "rtkit.presence.backends.memory:MemoryPresenceBackend",
        "redis": "rtkit.presence.backends.redis:RedisPresenceBackend",
    }
    _backend: PresenceBackend

    def __init__(
        self,
        backend: PresenceBackend | None = None,
        *,
        clock: Clock | None = None,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        bus: EventPublisher | None = None,
    ) -> None:
        self._configure(
            backend if backend is not None else MemoryPresenceBackend(),
            instance_id=instance_id,
            ttl=ttl,
            clock=clock,
            bus=bus,
        )
        self._names: dict[str, str] = {}  # user id -> latest username given here
        self._local_users: dict[str, int] = {}  # user id -> connections held here

    async def connect(
        self,
        user_id: str,
        sid: str,
        *,
        username: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> bool:
        """Record a connection ``sid`` of ``user_id`` on this instance.

        Connecting a sid that is already connected (to the same user) is a
        no-op that updates ``username`` and ``meta`` when given. The latest
        username given wins. ``meta`` (a JSON object of at most 4 KiB) is kept
        for the connection, see [`meta`][rtkit.presence.PresenceStore.meta]; ``{}`` drops it.

        Returns:
            True iff the user just came online (this is their first connection).

        Raises:
            rtkit.errors.ValidationError: A bad id, username or meta, or ``sid``
                is already connected as another user (nothing changes).
            rtkit.errors.PayloadTooLarge: An id or ``meta`` is too large.
            rtkit.errors.BackendUnavailable: The backend did not answer in time:
                the connection is not held, and whatever reached the backend is
                undone by the heartbeat.
            rtkit.errors.Closed: The store was closed.
        """
        if not self._live:
            await self._ready()
        check_id(user_id, "user_id")
        check_id(sid, "sid")
        if username is not None:
            check_id(username, "username")
        meta_json = None if meta is None else check_meta(meta)
        async with self._transition(sid):
            online, at = await self._backend.connect(
                self.instance_id, user_id, sid, username, meta_json, self._now(), self.ttl
            )
            if self._arrived(sid):
                self._keep(sid, user_id, username, meta_json)
        if online:
            await self._publish_event(
                "presence.online",
                PresenceEvent(
                    user_id=user_id, username=username, instance_id=self.instance_id, time=at
                ),
            )
        return online

    async def disconnect(self, sid: str) -> Departure | None:
        """Remove the connection ``sid`` of this instance.

        The instance stops holding it at once. When the backend does not answer
        in time this logs a warning and returns None: the heartbeat removes it
        there (publishing ``presence.offline`` if its user went offline).

        Returns:
            What was removed, or None for a sid this instance does not hold (or
            when the backend could not be told yet).
        """
        if not self._live:
            await self._ready()
        check_id(sid, "sid")
        try:
            async with self._transition(sid):
                self._depart(sid)
                removed = await self._backend.disconnect(self.instance_id, sid, self._now())
        except BackendUnavailable as exc:
            self._pending(sid, exc)
            return None
        if removed is None:
            return None
        await self._announce_offline([removed])
        return Departure(removed.user_id, removed.sid, removed.offline)

    async def is_online(self, user_id: str) -> bool:
        """Whether ``user_id`` has at least one connection on any instance."""
        if not self._live:
            await self._ready()
        return await self._backend.is_online(check_id(user_id, "user_id"))

    async def online_users(self, cursor: str | None = None, limit: int = 100) -> Page[OnlineUser]:
        """One page of the users online on every instance, sorted by user id.

        Pass the returned ``next_cursor`` as ``cursor`` for the next page;
        ``limit`` is 1 to 1000.
        """
        await self._ready()
        return await self._backend.online_users(check_cursor(cursor), check_limit(limit))

    async def count(self) -> PresenceCount:
        """How many users and connections are online (O(1))."""
        await self._ready()
        return await self._backend.count()

    async def connections(self, user_id: str) -> list[str]:
        """The sids of ``user_id``'s connections on every instance, sorted."""
        await self._ready()
        return await self._backend.connections(check_id(user_id, "user_id"))

    async def meta(self, sid: str) -> dict[str, Any] | None:
        """The ``meta`` given when this instance connected ``sid`` (None if none)."""
        await self._ready()
        text = await self._backend.meta(self.instance_id, check_id(sid, "sid"))
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    async def purge_expired(self) -> list[Departure]:
        """Run one purge pass now: renew this instance's lease, remove expired instances.

        The janitor does this every ``ttl / 3`` seconds; on a store that has not
        started yet, the pass that starts it is this one. Offline transitions
        are published.

        Returns:
            The connections removed, sorted by user and sid.

        Raises:
            rtkit.errors.Closed: The store was closed.
            rtkit.errors.BackendUnavailable: The backend did not answer in time.
        """
        return await super().purge_expired()

    # -- what this instance holds (see LeasedStore)

    def _keep(self, sid: str, user_id: str, username: str | None, meta: str | None) -> None:
        """A connect succeeded: hold ``sid`` (``meta`` None keeps the meta held, "{}" drops it)."""
        old = self._held.get(sid)
        if meta is None:
            meta = None if old is None or old.user_id != user_id else old.meta
        elif meta == "{}":
            meta = None
        self._hold(sid, _Held(user_id, meta))
        if username is not None:
            self._names[user_id] = username

    def _hold(self, sid: str, held: _Held | None) -> None:
        old = self._held.get(sid)
        super()._hold(sid, held)
        if old is not None:
            left = self._local_users[old.user_id] - 1
            if left:
                self._local_users[old.user_id] = left
            else:
                del self._local_users[old.user_id]
                self._names.pop(old.user_id, None)
        if held is not None:
            self._local_users[held.user_id] = self._local_users.get(held.user_id, 0) + 1

    def _items(self, sid: str, held: _Held) -> Iterable[str]:
        return (sid + ITEM_SEPARATOR + held.user_id,)

    def _matches(self, view: str, held: _Held) -> bool:
        return view == held.user_id

    async def _restore(self, entries: list[tuple[str, _Held | None]]) -> list[Removed]:
        holdings = [
            (sid, None if h is None else Holding(h.user_id, self._names.get(h.user_id), h.meta))
            for sid, h in entries
        ]
        removed, online, at = await self._backend.repair(
            self.instance_id, self._now(), self.ttl, holdings
        )
        for user_id in online:
            event = PresenceEvent(
                user_id=user_id,
                username=self._names.get(user_id),
                instance_id=self.instance_id,
                time=at,
            )
            await self._publish_event("presence.online", event)
        return removed

    async def _beat(self) -> list[Departure]:
        removed = settle_departures(await self._purge_pass())
        if removed:
            logger.info(
                "presence: removed %d connection(s) of instance(s) %s (expired, or not held)",
                len(removed),
                sorted({r.instance_id for r in removed}),
            )
        await self._announce_offline(removed)
        return [Departure(r.user_id, r.sid, r.offline) for r in removed]

    async def _released(self, removed: list[Removed]) -> None:
        await self._announce_offline(settle_departures(removed))

    async def _announce_offline(self, removed: list[Removed]) -> None:
        for r in removed:
            if r.offline:
                await self._publish_event(
                    "presence.offline",
                    PresenceEvent(
                        user_id=r.user_id,
                        username=r.username,
                        instance_id=r.instance_id,
                        time=r.time,
                    ),
                )

    async def _publish_event(self, name: str, event: PresenceEvent) -> None:
        await self._publish(name, event.model_dump())
