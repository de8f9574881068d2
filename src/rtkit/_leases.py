"""TRANSITION SHIM (the old layout): deleted once every component has moved to rtkit._core.

Instance leases: how presence and rooms notice that a server instance died.

Every server instance holds a lease, renewed by a heartbeat every ``ttl / 3``
seconds. A lease that is not renewed for ``ttl`` seconds has expired, and the
next purge pass of any surviving instance (also every ``ttl / 3`` seconds)
removes everything the dead instance held. A crashed instance is therefore
purged at most ``ttl + ttl / 3 < 2 * ttl`` seconds after its last heartbeat.

Also here, shared by presence and rooms: the named in-process state that lets
several memory-backed store objects (several "instances" in one process) share
their data, the way several Redis-backed stores share one Redis; id, cursor and
limit checks; paging over a sorted list.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import re
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from ._backends import BackendKind, backend_kind, check_prefix, load_lua
from ._clock import Clock
from ._ids import new_id
from ._lifecycle import AsyncResource
from ._pages import Page
from ._validation import check_id
from .errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "DEFAULT_TTL",
    "LEASE_LUA",
    "MAX_PAGE",
    "Janitor",
    "LeasedStore",
    "check_cursor",
    "check_instance_id",
    "check_limit",
    "check_name",
    "check_ttl",
    "expired_instances",
    "lease_lost",
    "page_of_sorted",
    "shared_memory_state",
    "system_now",
]

logger = logging.getLogger("rtkit.leases")

DEFAULT_TTL = 30.0

#: The largest ``limit`` a listing accepts.
MAX_PAGE = 1000

#: The Lua prelude of the presence and rooms scripts (``resources/lease.lua``).
LEASE_LUA = load_lua("rtkit", "lease.lua")

_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def lease_lost(log: logging.Logger, component: str, instance_id: str, ttl: float) -> None:
    """Warn that this instance found its lease gone: others took it for dead and purged it."""
    log.warning(
        "%s: instance %s found its lease gone: it did not heartbeat for %.1f s (paused? "
        "disconnected from the backend?) and another instance purged what it held; "
        "clients connected through it are no longer listed until they reconnect",
        component,
        instance_id,
        ttl,
    )


def check_ttl(ttl: Any) -> float:
    """Return ``ttl`` as a float if it is a usable lease TTL (finite, > 0), else raise."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigurationError(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_instance_id(instance_id: Any) -> str:
    """Return ``instance_id``, or a new UUIDv7 when it is ``None``.

    Instance ids are 1-64 characters of letters, digits and ``._-`` (they are
    part of Redis key names).
    """
    if instance_id is None:
        return new_id()
    if not isinstance(instance_id, str) or not _INSTANCE_RE.match(instance_id):
        raise ValidationError(
            f"instance_id must be 1-64 characters of letters, digits and ._-, got {instance_id!r}"
        )
    return instance_id


class Janitor:
    """Calls ``beat`` every ``interval`` seconds in a background task.

    ``beat`` renews this instance's lease and purges expired instances; an
    error in one beat is logged and the next beat runs as usual.
    """

    def __init__(self, beat: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self._beat = beat
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background task (no-op when it already runs)."""
        if not self.running:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop the background task and wait for it to end.

        Besides cancelling the task, a stop flag is set: a cancellation that a
        client library swallows mid-command cannot keep the task alive.
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "%s: heartbeat failed; retrying in %.1f s", self._name, self._interval
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)


S = TypeVar("S")

_shared: weakref.WeakValueDictionary[tuple[str, str, str], Any] = weakref.WeakValueDictionary()


def shared_memory_state(url: str, prefix: str, component: str, factory: Callable[[], S]) -> S:
    """The in-process state of a memory backend.

    ``memory://`` gives a private state; ``memory://<name>`` gives the state
    shared by every store of the same component with that name and prefix in
    this process (kept while one of them is alive).
    """
    name = urlsplit(url).netloc
    if not name:
        return factory()
    key = (component, name, prefix)
    state: S | None = _shared.get(key)
    if state is None:
        state = factory()
        _shared[key] = state
    return state


def check_name(value: Any, what: str) -> str:
    """:func:`check_id`, and valid UTF-8 (ids are sorted by their UTF-8 bytes on Redis)."""
    check_id(value, what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    return str(value)


def check_cursor(cursor: Any) -> str | None:
    """Validate a page cursor (``None`` for the first page)."""
    return None if cursor is None else check_name(cursor, "cursor")


def check_limit(limit: Any) -> int:
    """Validate a page size: an int from 1 to :data:`MAX_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r}")
    return limit


def page_of_sorted(items: list[str], cursor: str | None, limit: int) -> Page[str]:
    """The page of sorted ``items`` after ``cursor``: the specification of lexical paging.

    A cursor is the last item of the previous page, so paging stays correct
    while items come and go.
    """
    start = 0 if cursor is None else bisect.bisect_right(items, cursor)
    chunk = items[start : start + limit + 1]
    if len(chunk) > limit:
        return Page(chunk[:limit], chunk[limit - 1])
    return Page(chunk, None)


def expired_instances(
    leases: dict[str, float], instance_id: str | None, at: float, ttl: float, force: str | None
) -> tuple[list[str], bool]:
    """The memory backends' lease step: the specification of the Lua prelude's.

    Renews ``instance_id``'s lease (when given) until ``at + ttl`` and returns
    the instances to purge, sorted (just ``force`` when given), and whether
    ``instance_id``'s lease was missing before the renewal. The caller removes
    what each dead instance held, then its lease.
    """
    missing = False
    if instance_id is not None:
        missing = instance_id not in leases
        leases[instance_id] = at + ttl
    if force is not None:
        return [force], missing
    return sorted(i for i, expires in leases.items() if expires <= at), missing


def system_now(now: float | None) -> float:
    """``now``, or the system clock's time when it is None (for the memory backends)."""
    return time.time() if now is None else now


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


class LeasedStore(AsyncResource, ABC, Generic[R]):
    """Base of the stores whose entries belong to server instances holding leases.

    Subclasses set ``_backend`` after :meth:`_configure`; ``R`` is what their
    backend reports for each entry a purge removes.
    """

    _component: ClassVar[str]
    _backend: LeaseBackend[R]

    def _configure(
        self,
        url: str,
        *,
        prefix: str,
        instance_id: str | None,
        ttl: float,
        redis: aioredis.Redis | None,
        clock: Clock | None,
    ) -> BackendKind:
        """Check the arguments every leased store takes; return the backend kind."""
        kind = backend_kind(url, component=type(self).__name__)
        check_prefix(prefix)
        if kind == "memory" and redis is not None:
            raise ConfigurationError("a Redis client was given with a memory:// URL")
        self.instance_id: str = check_instance_id(instance_id)
        self.ttl: float = check_ttl(ttl)
        self._clock = clock
        self._janitor = Janitor(
            self.purge_expired, self.ttl / 3, f"{self._component}-{self.instance_id}"
        )
        self.closed = False
        self._leased = False  # whether this instance has taken its lease
        return kind

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock.time()

    async def start(self) -> None:
        """Begin heartbeating this instance's lease and purging expired instances."""
        await self.purge_expired()
        self._janitor.start()

    async def close(self) -> None:
        """Stop heartbeating, remove this instance's entries now, release the backend.

        The store must not be used afterwards; closing twice is a no-op.
        """
        if self.closed:
            return
        self.closed = True
        await self._janitor.stop()
        try:
            removed, _ = await self._backend.purge(None, self._now(), self.ttl, self.instance_id)
            await self._released(removed)
        finally:
            await self._backend.close()

    async def _released(self, removed: list[R]) -> None:
        """Hook: this instance's own entries were removed by :meth:`close`."""

    async def _purge_pass(self) -> list[R]:
        """Renew this instance's lease and remove expired instances' entries."""
        found, missing = await self._backend.purge(self.instance_id, self._now(), self.ttl, None)
        if missing and self._leased:
            lease_lost(
                logging.getLogger(f"rtkit.{self._component}"),
                self._component,
                self.instance_id,
                self.ttl,
            )
        self._leased = True
        return found

    @abstractmethod
    async def purge_expired(self) -> list[Any]:
        """Run one purge pass now (the janitor calls this every ``ttl / 3`` seconds)."""
