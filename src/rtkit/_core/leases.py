"""Instance leases: how presence and rooms notice that a server instance died.

Every server instance holds a lease, renewed by a heartbeat every ``ttl / 3``
seconds. A lease that is not renewed for ``ttl`` seconds has expired, and the
next purge pass of any surviving instance (also every ``ttl / 3`` seconds)
removes everything the dead instance held. A crashed instance is therefore
purged at most ``ttl + ttl / 3 < 2 * ttl`` seconds after its last heartbeat.

Each instance is also the authority on its own entries: the store keeps them
locally, and every backend keeps a ``Digest`` of each
instance's entries, updated by every transition in the same atomic step. A
heartbeat compares the two digests (one round trip) and, when they differ,
reconciles the backend with the instance (see ``leased.py``).

The store base class is in ``leased.py``; the helpers here are what backends
use, and ``LeaseBackend``, what the base class needs of every leased backend
(here, not in ``leased.py``, so that a backend protocol can extend it without
importing a component).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol, TypeVar

from ..errors import ConfigurationError
from .ids import new_id
from .redis import Keyspace, load_lua, redis_unavailable
from .validate import check_name

__all__ = [
    "DEFAULT_TTL",
    "ITEM_SEPARATOR",
    "LEASE_LUA",
    "Digest",
    "LeaseBackend",
    "LeaseScript",
    "check_instance_id",
    "expired_instances",
    "system_now",
]

R = TypeVar("R")
V = TypeVar("V")

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


ITEM_SEPARATOR = "\x1f"
"""Joins the parts of a digest item (ids never contain control characters)."""

_DIGEST_MODULUS = 1 << 48


def _item_hash(item: str) -> int:
    digest = hashlib.sha1(item.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:12], 16)


class Digest:
    """An order-independent fingerprint of a set of strings (an instance's entries).

    Its ``text`` is ``"<count>:<sum>"``: how many items, and the sum modulo
    2**48 of the first 48 bits of each item's SHA-1. Adding and removing an
    item are O(1), so every transition keeps the digest up to date; the Lua
    prelude (``lease.lua``) computes exactly the same text on Redis. Two sets
    that differ have different digests except with a chance of about 2**-48.
    """

    __slots__ = ("count", "total")

    def __init__(self, count: int = 0, total: int = 0) -> None:
        self.count = count
        self.total = total

    def add(self, item: str) -> None:
        """Count ``item`` in."""
        self.count += 1
        self.total = (self.total + _item_hash(item)) % _DIGEST_MODULUS

    def discard(self, item: str) -> None:
        """Count ``item`` out (it must have been added)."""
        self.count -= 1
        self.total = (self.total - _item_hash(item)) % _DIGEST_MODULUS

    def copy(self) -> Digest:
        """An independent copy."""
        return Digest(self.count, self.total)

    @property
    def text(self) -> str:
        """The form backends store and compare."""
        return f"{self.count}:{self.total}"


class LeaseBackend(Protocol[R, V]):
    """What a leased store needs of its backend.

    ``R`` is what a purge reports per entry removed, ``V`` what ``held`` lists
    per connection (sid) of an instance.
    """

    async def purge(
        self, instance_id: str | None, now: float | None, ttl: float, force: str | None
    ) -> tuple[list[R], bool]:
        """Renew ``instance_id``'s lease and remove expired instances (or ``force``'s entries).

        Also says whether ``instance_id``'s lease was missing before the renewal.
        """
        ...

    async def check(self, instance_id: str, digest: str, exclude: list[str]) -> bool:
        """Whether the digest of ``instance_id``'s entries is ``digest``.

        The entries of the sids in ``exclude`` are left out of the comparison
        (one round trip; it changes nothing).
        """
        ...

    async def held(self, instance_id: str, cursor: int) -> tuple[dict[str, V], int | None]:
        """What the backend holds for ``instance_id``'s sids: one chunk, and the next cursor.

        Start with cursor 0; ``None`` as the next cursor means the listing is
        complete. A sid may come in two chunks (the last one wins).
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
