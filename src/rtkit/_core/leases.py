"""Instance leases: how presence and rooms notice that a server instance died.

Every server instance holds a lease, renewed by a heartbeat every ``ttl / 3``
seconds. A lease that is not renewed for ``ttl`` seconds has expired, and the
next purge pass of any surviving instance (also every ``ttl / 3`` seconds)
removes everything the dead instance held. A crashed instance is therefore
purged at most ``ttl + ttl / 3 < 2 * ttl`` seconds after its last heartbeat.

The store base class is in ``leased.py``; the helpers here are what backends use.
"""

from __future__ import annotations

import time
from typing import Any

from .ids import new_id
from .redis import load_lua
from .validate import check_name

__all__ = [
    "DEFAULT_TTL",
    "LEASE_LUA",
    "check_instance_id",
    "expired_instances",
    "system_now",
]

DEFAULT_TTL = 30.0
"""Seconds an instance's lease lives without a heartbeat."""

#: The Lua prelude of the presence and rooms scripts (``resources/lease.lua``).
LEASE_LUA = load_lua("rtkit._core", "lease.lua")

MAX_INSTANCE_ID = 64


def check_instance_id(instance_id: Any) -> str:
    """Return ``instance_id``, or a new UUIDv7 when it is ``None`` (a name, at most 64)."""
    if instance_id is None:
        return new_id()
    return check_name(instance_id, "instance_id", max_length=MAX_INSTANCE_ID)


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
