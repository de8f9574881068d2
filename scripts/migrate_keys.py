"""Move rtkit's keys from the single-slot layout (before 0.x: ``<prefix>{component}:...``)
to the spread layout (``{<prefix><component>:<entity>}:...``), for one prefix.

    python scripts/migrate_keys.py --from redis://old:6379/0 --to redis+cluster://h:p,h:p \\
        --prefix rtkit: [--dry-run]

What it moves (DUMP/RESTORE, keeping each key's remaining time to live; the old keys
stay until you delete them, ``--delete``):

* chat history (``{messages}:room:<room>`` streams), pending notifications
  (``{notifications}:user:<user>`` lists), dedup marks (``{dedup}:<id>``);
* uploads: each record, and the quota ledger rebuilt in its new shape.

What needs no move: rate limiter state and cached responses (short-lived: they start
afresh), registry instances (every instance re-registers at its next heartbeat, within
``ttl / 3``). Presence and rooms are ephemeral: each live instance puts its own
connections and memberships back at its first heartbeat on the new layout (within
``ttl / 3``), so their old keys (``{presence}:...``, ``{rooms}:...``) are not moved;
``--delete`` deletes them. Stop the old deployment (or let it drain) before moving, so
nothing is written to the old keys meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis


def connect(url: str) -> Any:
    """A synchronous client: a ``RedisCluster`` for ``redis+cluster://`` URLs."""
    parts = urlsplit(url)
    if parts.scheme.endswith("+cluster"):
        nodes = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            nodes.append(redis.cluster.ClusterNode(host, int(port or 6379)))
        return redis.RedisCluster(
            startup_nodes=nodes,
            username=parts.username,
            password=parts.password,
            ssl=parts.scheme.startswith("rediss"),
        )
    return redis.Redis.from_url(url)


def old_keys(source: Any, prefix: str, component: str) -> Iterator[tuple[bytes, str]]:
    """``(old key, what follows '<prefix>{<component>}')`` for every old key of a component."""
    base = f"{prefix}{{{component}}}"
    for key in source.scan_iter(match=base + "*", count=1000):
        yield key, key.decode()[len(base) :]


def new_key(prefix: str, component: str, rest: str) -> str | None:
    """The new name of an old key (``rest`` follows the old tag), or ``None`` to skip it."""
    if component == "messages" and rest.startswith(":room:"):
        return f"{{{prefix}messages:{rest[len(':room:') :]}}}:stream"
    if component == "notifications" and rest.startswith(":user:"):
        return f"{{{prefix}notifications:{rest[len(':user:') :]}}}:list"
    if component == "dedup" and rest.startswith(":"):
        return f"{{{prefix}dedup:{rest[1:]}}}"
    if component == "uploads" and rest.startswith(":"):  # a record or a claim
        upload_id, _, claim = rest[1:].partition(":")
        return f"{{{prefix}uploads:{upload_id}}}" + (":claim" if claim else "")
    return None


def move(source: Any, target: Any, old: bytes, new: str, dry_run: bool) -> None:
    data = source.dump(old)
    if data is None:
        return  # expired meanwhile
    ttl = max(source.pttl(old), 0)
    print(f"{old.decode()} -> {new}" + (f" (ttl {ttl} ms)" if ttl else ""))
    if not dry_run:
        target.restore(new, ttl, data, replace=True)


def move_upload_ledger(source: Any, target: Any, prefix: str, dry_run: bool) -> None:
    """The old ledger (``.expiry``, ``.sizes``, ``.used:<user>``, ``.total``) in its new shape."""
    base = f"{prefix}{{uploads}}"
    tag = f"{{{prefix}uploads}}"
    expiry = source.zrange(base + ".expiry", 0, -1, withscores=True)
    sizes = source.hgetall(base + ".sizes")
    total = source.get(base + ".total")
    used: dict[str, int] = {}
    for key in source.scan_iter(match=base + ".used:*", count=1000):
        user = key.decode()[len(base + ".used:") :]
        row = source.hgetall(key)
        used[f"{user}:b"] = int(row.get(b"bytes", 0))
        used[f"{user}:n"] = int(row.get(b"n", 0))
    print(f"upload ledger: {len(expiry)} uploads, {len(used) // 2} users -> {tag}:*")
    if dry_run or not expiry:
        return
    target.zadd(tag + ":expiry", dict(expiry))
    if sizes:
        target.hset(tag + ":sizes", mapping=sizes)
    if used:
        target.hset(tag + ":used", mapping=used)
    if total is not None:
        target.set(tag + ":total", total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="the old Redis URL")
    parser.add_argument("--to", dest="target", required=True, help="the new Redis URL")
    parser.add_argument("--prefix", default="rtkit:")
    parser.add_argument("--dry-run", action="store_true", help="only print what would move")
    parser.add_argument("--delete", action="store_true", help="delete each old key once moved")
    args = parser.parse_args()
    source, target = connect(args.source), connect(args.target)
    for component in ("messages", "notifications", "dedup", "uploads"):
        for old, rest in old_keys(source, args.prefix, component):
            new = new_key(args.prefix, component, rest)
            if new is not None:
                move(source, target, old, new, args.dry_run)
                if args.delete and not args.dry_run:
                    source.delete(old)
    move_upload_ledger(source, target, args.prefix, args.dry_run)
    for component in ("presence", "rooms"):  # rebuilt by the instances: never moved
        old = [key for key, _ in old_keys(source, args.prefix, component)]
        done = "deleted" if args.delete and not args.dry_run else "left as they are"
        print(f"{component}: {len(old)} old keys not moved (rebuilt by the instances), {done}")
        if args.delete and not args.dry_run:
            for start in range(0, len(old), 500):
                source.delete(*old[start : start + 500])


if __name__ == "__main__":
    main()
