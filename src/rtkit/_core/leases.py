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

import functools
import hashlib
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..errors import ConfigurationError
from .ids import new_id
from .redis import Keyspace, load_lua, redis_unavailable, run_scripts
from .validate import check_name

__all__ = [
    "BUCKETS",
    "DEFAULT_TTL",
    "ITEM_SEPARATOR",
    "LEASE_LUA",
    "BucketScript",
    "Digest",
    "LeaseBackend",
    "bucket_of",
    "check_instance_id",
    "digest_sum",
    "expired_instances",
    "spread_tags",
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


BUCKETS = 32
"""Presence and rooms spread their keys over this many buckets, each its own hash tag
(``{<prefix><component>:<bucket>}``): on a cluster, over every master."""

EXPIRED_PER_STEP = 8
"""Expired instances listed per bucket by one lease step of a purge pass."""


def bucket_of(entity: str) -> int:
    """The bucket of a user (presence) or a room (rooms): stable across processes."""
    return zlib.crc32(entity.encode("utf-8")) % BUCKETS


@functools.lru_cache(maxsize=256)
def spread_tags(keys: Keyspace, buckets: int = BUCKETS) -> tuple[str, ...]:
    """The entity of each bucket's hash tag, chosen so that the buckets' cluster slots
    cover the slot space evenly: bucket ``b`` gets the first ``"<b>.<n>"`` whose slot
    lies in the ``b``-th of ``buckets`` equal slices of the 16384 slots.

    A cluster's masters own contiguous slot ranges, so each master serves a share of
    the buckets close to its share of the slots (with 3 even masters: 10 or 11 of the
    32), whatever the prefix. Pure arithmetic, the same in every process.
    """
    found = []
    for b in range(buckets):
        n = 0
        while key_slot(keys.tag(f"{b}.{n}").encode()) * buckets // REDIS_CLUSTER_HASH_SLOTS != b:
            n += 1
        found.append(f"{b}.{n}")
    return tuple(found)


def digest_sum(parts: list[Any]) -> str:
    """The text of the sum of per-bucket partial digests (``[count, sum]`` replies)."""
    count = sum(int(part[0]) for part in parts)
    total = sum(int(part[1]) for part in parts) % _DIGEST_MODULUS
    return Digest(count, total).text


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(now)


class BucketScript:
    """The Lua script of a leased Redis backend: the lease prelude, then the component's own.

    Each call runs on one bucket: ``KEYS`` holds every key it touches, all under that
    bucket's tag, starting with the bucket's leases and digests; ``ARGV`` is
    ``{op, now, args...}``, where ``now`` is the injected clock's time or ``''`` for the
    Redis server's ``TIME`` (as ``lease.lua`` expects). Calls on several buckets are
    pipelined: one round trip on one Redis, one per master (in parallel) on a cluster.
    """

    def __init__(self, client: Any, keys: Keyspace, package: str, name: str) -> None:
        self.client = client
        self.keys = keys
        self._entities = spread_tags(keys)
        self._script = client.register_script(LEASE_LUA + load_lua(package, name))

    def key(self, bucket: int, *parts: str) -> str:
        """``{<prefix><component>:<bucket>.<n>}:part...`` (``n``: see ``spread_tags``)."""
        return self.keys.entity_key(self._entities[bucket], *parts)

    def lease_keys(self, bucket: int) -> list[str]:
        """The two keys every call starts with: the bucket's leases and digests."""
        return [self.key(bucket, "l"), self.key(bucket, "d")]

    async def run(self, keys: list[str], op: str, now: float | None, *args: Any) -> Any:
        """One call (``BackendUnavailable`` when Redis does not answer in time)."""
        with redis_unavailable(f"running {self.keys.component} {op}"):
            return await self._script(keys=keys, args=[op, _now_arg(now), *args])

    async def run_many(
        self, op: str, now: float | None, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """``op`` once per ``(keys, args)``, pipelined; the replies in order."""
        if not calls:
            return []
        head = [op, _now_arg(now)]
        with redis_unavailable(f"running {self.keys.component} {op}"):
            replies = await run_scripts(
                self.client, self._script, [(keys, [*head, *args]) for keys, args in calls]
            )
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def read(self, build: Callable[[Any], None]) -> list[Any]:
        """Plain commands added by ``build(pipe)``, pipelined (one round trip per master)."""
        with redis_unavailable(f"reading {self.keys.component}"):
            async with self.client.pipeline(transaction=False) as pipe:
                build(pipe)
                result: list[Any] = await pipe.execute()
                return result

    async def _dead(self, instances: list[str], now: float) -> set[str]:
        """Which of ``instances`` hold no live lease in any bucket.

        An instance's lease is the latest of its per-bucket leases: a heartbeat renews
        them all, a transition only the one of its bucket. One pipelined read.
        """

        def build(pipe: Any) -> None:
            for iid in instances:
                for b in range(BUCKETS):
                    pipe.zscore(self.key(b, "l"), iid)

        found = await self.read(build)
        dead = set()
        for i, iid in enumerate(instances):
            scores = [float(s) for s in found[i * BUCKETS : (i + 1) * BUCKETS] if s is not None]
            if not scores or max(scores) <= now:
                dead.add(iid)
        return dead

    async def purge(
        self,
        purge_call: Callable[[int, str], tuple[list[str], list[Any]]],
        instance_id: str | None,
        now: float | None,
        ttl: float,
        force: str | None,
    ) -> tuple[list[Any], bool]:
        """A purge pass over every bucket; the replies of the ``purge`` calls, and whether
        ``instance_id``'s lease was missing in some bucket before the renewal.

        Each round: the lease step on every bucket (renews ``instance_id``'s lease, lists
        expired instances), a read of those instances' leases in every bucket (an
        instance is dead only when its lease expired in all of them), then
        ``purge_call(bucket, target)`` (keys and args of one
        ``purge`` call: one batch of one instance in one bucket) until every target says
        ``done``. With ``force``, that instance is purged from every bucket at once.
        """
        own, missing = instance_id or "", False
        replies: list[Any] = []
        checked: set[str] = set()  # instances found expired in some bucket, then judged
        dead: set[str] = set()  # ...and found expired in every bucket
        while True:
            if force is not None:
                targets = [(b, force) for b in range(BUCKETS)]
            else:
                steps = await self.run_many(
                    "lease",
                    now,
                    [
                        (self.lease_keys(b), [own, repr(ttl), EXPIRED_PER_STEP])
                        for b in range(BUCKETS)
                    ],
                )
                missing = missing or any(int(step[1]) for step in steps)
                own = ""  # renewed once per pass
                listed = [(b, str(t)) for b, step in enumerate(steps) for t in step[2:]]
                fresh = sorted({t for _, t in listed} - checked)
                if fresh:
                    checked.update(fresh)
                    dead |= await self._dead(fresh, min(float(step[0]) for step in steps))
                targets = [(b, t) for b, t in listed if t in dead]
                if not targets:
                    return replies, missing
            while targets:
                found = await self.run_many("purge", now, [purge_call(b, t) for b, t in targets])
                replies += found
                targets = [t for t, reply in zip(targets, found, strict=True) if reply[1] == "more"]
            if force is not None:
                return replies, missing
