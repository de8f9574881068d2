"""Instance leases: how presence and rooms notice that a server instance died.

Every server instance holds a lease, renewed by a heartbeat every ``ttl / 3``
seconds. A lease that is not renewed for ``ttl`` seconds has expired, and the
next purge pass of any surviving instance (also every ``ttl / 3`` seconds)
removes everything the dead instance held. A crashed instance is therefore
purged at most ``ttl + ttl / 3 < 2 * ttl`` seconds after its last heartbeat.

The store base class is in ``leased.py``; the helpers here are what backends
use, and ``LeaseBackend``, what the base class needs of every leased backend
(here, not in ``leased.py``, so that a backend protocol can extend it without
importing a component).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TypeVar

from ..errors import ConfigurationError
from .ids import new_id
from .redis import Keyspace, load_lua, redis_unavailable
from .validate import check_name

__all__ = [
    "DEFAULT_TTL",
    "LEASE_LUA",
    "LeaseBackend",
    "LeaseScript",
    "check_instance_id",
    "expired_instances",
    "system_now",
]

R = TypeVar("R")

DEFAULT_TTL = 30.0
"""Seconds an instance's lease lives without a heartbeat."""

#: The Lua prelude of the presence and rooms scripts (``resources/lease.lua``).
LEASE_LUA = load_lua("rtkit._core", "lease.lua")

MAX_INSTANCE_ID = 64


def check_instance_id(instance_id: Any) -> str:
    """Return ``instance_id``, or a new UUIDv7 when it is ``None``.

    An instance id is a name of at most 64 characters without ``:`` (it is part
    of Redis keys such as ``s:<instance>:<sid>``); anything else raises
    ``ConfigurationError``, as it is a constructor setting.
    """
    if instance_id is None:
        return new_id()
    name = check_name(
        instance_id, "instance_id", max_length=MAX_INSTANCE_ID, error=ConfigurationError
    )
    if ":" in name:
        raise ConfigurationError(f"invalid instance_id {name!r:.80}: it must not contain ':'")
    return name


class LeaseBackend(Protocol[R]):
    """What a leased store needs of its backend; ``R`` is what a purge reports per entry."""

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


class LeaseScript:
    """The Lua script of a leased Redis backend: the lease prelude, then the component's own.

    Each ``run()`` is one ``EVALSHA`` with ``KEYS = {<base>:leases}`` and
    ``ARGV = {op, <base>, now, args...}``, where ``now`` is the injected clock's
    time or ``''`` for the Redis server's ``TIME`` (as ``lease.lua`` expects).
    """

    def __init__(self, client: Any, keys: Keyspace, package: str, name: str) -> None:
        self._keys = keys
        self._leases = keys.key("leases")
        self._script = client.register_script(LEASE_LUA + load_lua(package, name))

    async def run(self, op: str, now: float | None, *args: Any) -> Any:
        """Run ``op`` (``BackendUnavailable`` when Redis does not answer in time)."""
        with redis_unavailable(f"running {self._keys.component} {op}"):
            now_arg = "" if now is None else repr(now)
            return await self._script(
                keys=[self._leases], args=[op, self._keys.base, now_arg, *args]
            )
