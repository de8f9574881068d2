"""PresenceStore: who is online, with several connections per user, across every instance."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from .._backends import DEFAULT_PREFIX
from .._clock import Clock
from .._leases import (
    DEFAULT_TTL,
    LeasedStore,
    check_cursor,
    check_limit,
    check_name,
)
from .._pages import Page
from ..errors import PayloadTooLarge, ValidationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "MAX_META_BYTES",
    "Departure",
    "EventPublisher",
    "OnlineUser",
    "PresenceBackend",
    "PresenceCount",
    "PresenceEvent",
    "PresenceStore",
    "Removed",
]

logger = logging.getLogger("rtkit.presence")

#: The largest ``meta`` of one connection, as compact JSON.
MAX_META_BYTES = 4096


class EventPublisher(Protocol):
    """Anything with an async ``publish(name, data)``, such as ``rtkit.EventBus``."""

    async def publish(self, name: str, data: dict[str, Any], /) -> object:
        """Publish the event ``name`` with payload ``data``."""
        ...


@dataclass(frozen=True)
class Departure:
    """A connection that was removed.

    ``offline`` is true when it was the user's last connection: the user went
    offline with it.
    """

    user_id: str
    sid: str
    offline: bool


@dataclass(frozen=True)
class OnlineUser:
    """A user who is online: ``joined_at`` is the time of the first connection (epoch seconds)."""

    user_id: str
    username: str | None
    joined_at: float
    connections: int


@dataclass(frozen=True)
class PresenceCount:
    """How many users are online, through how many connections."""

    users: int
    connections: int


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
class Removed:
    """What a backend reports for each connection it removed."""

    user_id: str
    sid: str
    offline: bool
    username: str | None
    instance_id: str
    time: float


class PresenceBackend(ABC):
    """Where a :class:`PresenceStore` keeps its data (private: memory or Redis).

    ``now`` is the injected clock's time, or ``None`` for the backend's own
    clock (the system clock in memory, the server's ``TIME`` on Redis).
    Connections are keyed by ``(instance_id, sid)``; a connection can only be
    removed through its own instance, or by purging that instance.
    """

    @abstractmethod
    async def connect(
        self,
        instance_id: str,
        user_id: str,
        sid: str,
        username: str | None,
        meta: str | None,
        now: float | None,
        ttl: float,
    ) -> tuple[bool, float]:
        """Add a connection (raise ValidationError on a sid conflict); (came online, time)."""

    @abstractmethod
    async def disconnect(self, instance_id: str, sid: str, now: float | None) -> Removed | None:
        """Remove one connection of ``instance_id``."""

    @abstractmethod
    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[Removed], bool]:
        """Renew ``instance_id``'s lease, then remove every expired instance (or ``force``).

        Also says whether ``instance_id``'s lease was missing before the renewal.
        """

    @abstractmethod
    async def is_online(self, user_id: str) -> bool:
        """Whether the user has a connection."""

    @abstractmethod
    async def online_users(self, cursor: str | None, limit: int) -> Page[OnlineUser]:
        """A page of online users sorted by user id."""

    @abstractmethod
    async def count(self) -> PresenceCount:
        """Users and connections online."""

    @abstractmethod
    async def connections(self, user_id: str) -> list[str]:
        """The sids of the user's connections, sorted."""

    @abstractmethod
    async def meta(self, instance_id: str, sid: str) -> str | None:
        """The stored meta JSON of one connection."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections to the backend."""


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


def _check_meta(meta: Any) -> str | None:
    if meta is None:
        return None
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ValidationError("meta must be a dict with str keys")
    try:
        text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"meta must be JSON-serializable: {exc}") from exc
    if len(text.encode("utf-8", "surrogatepass")) > MAX_META_BYTES:
        raise PayloadTooLarge(f"meta is larger than {MAX_META_BYTES} bytes as JSON")
    return text


class PresenceStore(LeasedStore[Removed]):
    """Who is online: several connections per user, shared by every server instance.

    A user comes online with their first connection and goes offline with the
    last one; those two transitions are published on ``bus`` as
    ``presence.online`` / ``presence.offline`` (payload: :class:`PresenceEvent`).

    Each store is one server instance (``instance_id``) holding a lease.
    :meth:`start` heartbeats the lease every ``ttl / 3`` seconds and purges
    instances whose lease expired, so a crashed instance's connections are
    removed everywhere at most ``2 * ttl`` seconds after its last heartbeat
    (``ttl + ttl / 3``, plus clock skew between instances when a ``clock`` is
    injected on Redis). :meth:`close` removes this instance's connections at once.

    Args:
        url: ``memory://`` (private), ``memory://<name>`` (shared by every store
            with that name in this process) or a Redis URL.
        prefix: Redis key prefix.
        instance_id: this server instance (letters, digits, ``._-``); a new
            UUIDv7 by default. Give the same id to the RoomManager of the process.
        ttl: lease time-to-live in seconds.
        redis: a Redis client to borrow instead of making one from ``url``.
        bus: where to publish presence transitions.
        clock: where time comes from. On Redis, without a clock the server's
            ``TIME`` is used, so instance clocks need not agree.

    Example:
        ```python
        async with PresenceStore.from_url("redis://localhost:6379") as presence:
            if await presence.connect("42", sid, username="ada"):
                ...  # ada just came online
        ```
    """

    _component = "presence"

    def __init__(
        self,
        url: str = "memory://",
        *,
        prefix: str = DEFAULT_PREFIX,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        redis: aioredis.Redis | None = None,
        bus: EventPublisher | None = None,
        clock: Clock | None = None,
    ) -> None:
        kind = self._configure(
            url, prefix=prefix, instance_id=instance_id, ttl=ttl, redis=redis, clock=clock
        )
        self._bus = bus
        self._backend: PresenceBackend
        if kind == "memory":
            from .memory import MemoryPresenceBackend

            self._backend = MemoryPresenceBackend(url, prefix)
        else:
            from .redis import RedisPresenceBackend

            self._backend = RedisPresenceBackend(url, prefix, redis)

    @classmethod
    def from_url(
        cls,
        url: str = "memory://",
        *,
        prefix: str = DEFAULT_PREFIX,
        instance_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        redis: aioredis.Redis | None = None,
        bus: EventPublisher | None = None,
        clock: Clock | None = None,
    ) -> PresenceStore:
        """Make a store on the backend that ``url`` names (see the class for the arguments)."""
        return cls(
            url,
            prefix=prefix,
            instance_id=instance_id,
            ttl=ttl,
            redis=redis,
            bus=bus,
            clock=clock,
        )

    async def _released(self, removed: list[Removed]) -> None:
        await self._announce_offline(settle_departures(removed))

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
        username given wins. ``meta`` (JSON-serializable, at most
        :data:`MAX_META_BYTES`) is kept for the connection, see :meth:`meta`.

        Returns:
            True iff the user just came online (this is their first connection).

        Raises:
            ValidationError: a bad id, username or meta, or ``sid`` is already
                connected as another user (nothing changes).
        """
        check_name(user_id, "user_id")
        check_name(sid, "sid")
        if username is not None:
            check_name(username, "username")
        meta_json = _check_meta(meta)
        online, at = await self._backend.connect(
            self.instance_id, user_id, sid, username, meta_json, self._now(), self.ttl
        )
        self._leased = True
        if online:
            await self._publish(
                "presence.online",
                PresenceEvent(
                    user_id=user_id, username=username, instance_id=self.instance_id, time=at
                ),
            )
        return online

    async def disconnect(self, sid: str) -> Departure | None:
        """Remove the connection ``sid`` of this instance.

        Returns:
            What was removed, or None for a sid this instance does not hold.
        """
        check_name(sid, "sid")
        removed = await self._backend.disconnect(self.instance_id, sid, self._now())
        if removed is None:
            return None
        await self._announce_offline([removed])
        return Departure(removed.user_id, removed.sid, removed.offline)

    async def is_online(self, user_id: str) -> bool:
        """Whether ``user_id`` has at least one connection on any instance."""
        return await self._backend.is_online(check_name(user_id, "user_id"))

    async def online_users(self, cursor: str | None = None, limit: int = 100) -> Page[OnlineUser]:
        """One page of the users online on every instance, sorted by user id.

        Pass the returned ``next_cursor`` as ``cursor`` for the next page.
        """
        return await self._backend.online_users(check_cursor(cursor), check_limit(limit))

    async def count(self) -> PresenceCount:
        """How many users and connections are online (O(1))."""
        return await self._backend.count()

    async def connections(self, user_id: str) -> list[str]:
        """The sids of ``user_id``'s connections on every instance, sorted."""
        return await self._backend.connections(check_name(user_id, "user_id"))

    async def meta(self, sid: str) -> dict[str, Any] | None:
        """The ``meta`` given when this instance connected ``sid`` (None if none)."""
        text = await self._backend.meta(self.instance_id, check_name(sid, "sid"))
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    async def purge_expired(self) -> list[Departure]:
        """Run one purge pass now: renew this instance's lease, remove expired instances.

        The janitor started by :meth:`start` calls this every ``ttl / 3``
        seconds. Offline transitions are published.

        Returns:
            The connections removed, sorted by user and sid.
        """
        removed = settle_departures(await self._purge_pass())
        if removed:
            logger.info(
                "presence: purged %d connection(s) of expired instance(s) %s",
                len(removed),
                sorted({r.instance_id for r in removed}),
            )
        await self._announce_offline(removed)
        return [Departure(r.user_id, r.sid, r.offline) for r in removed]

    async def _announce_offline(self, removed: list[Removed]) -> None:
        for r in removed:
            if r.offline:
                await self._publish(
                    "presence.offline",
                    PresenceEvent(
                        user_id=r.user_id,
                        username=r.username,
                        instance_id=r.instance_id,
                        time=r.time,
                    ),
                )

    async def _publish(self, name: str, event: PresenceEvent) -> None:
        if self._bus is None:
            return
        try:
            await self._bus.publish(name, event.model_dump())
        except Exception:
            logger.exception("presence: could not publish %s for user %r", name, event.user_id)
