"""Instance leases: how presence and rooms notice that a server instance died.

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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ._ids import new_id
from ._pages import Page
from ._validation import check_id
from .errors import ConfigurationError, ValidationError

__all__ = [
    "DEFAULT_TTL",
    "LUA_NOW",
    "MAX_PAGE",
    "Janitor",
    "check_cursor",
    "check_instance_id",
    "check_limit",
    "check_name",
    "check_ttl",
    "lease_lost",
    "page_of_sorted",
    "shared_memory_state",
    "system_now",
]

logger = logging.getLogger("rtkit.leases")

DEFAULT_TTL = 30.0

#: The largest ``limit`` a listing accepts.
MAX_PAGE = 1000

_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")

#: Lua prelude of the presence and rooms scripts: ``ARGV[3]`` is the time given by
#: an injected clock, or empty to read the Redis server's clock (``TIME``), which
#: every instance shares, so clock skew between instances cannot matter.
LUA_NOW = """
local now = ARGV[3]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local nownum = tonumber(now)
local function renew_lease(leases, iid, ttl)
  local expires = nownum + tonumber(ttl)
  return redis.call('ZADD', leases, string.format('%.17g', expires), iid)
end
local function next_expired(leases)
  return redis.call('ZRANGE', leases, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1)[1]
end
"""


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


def system_now(now: float | None) -> float:
    """``now``, or the system clock's time when it is None (for the memory backends)."""
    return time.time() if now is None else now
