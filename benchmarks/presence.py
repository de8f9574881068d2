"""PresenceStore on Redis: throughput, paging latency, memory and round trips per connection.

Compares rtkit's PresenceStore (one Lua script per transition) with

* ``naive``: the obvious hand-written Redis presence, a set of sids per user, a
  hash of user records and a set of online users, one command per step (what
  most ports of the seed's ``Map`` look like), without crash purging;
* rtkit's memory backend (one process only), as the ceiling.

Figures printed: connect+disconnect pairs per second, ``online_users`` page
latency with ``--users`` (default 100,000) users online, Redis bytes per online
connection (``MEMORY USAGE`` of every key, and the ``INFO memory`` delta), and
round trips per connect. Never part of pass/fail.

    python benchmarks/presence.py [--redis redis://127.0.0.1:6379] [--users 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from rtkit import PresenceStore, redis_client


class CountingConnection(Connection):
    """Counts commands written to Redis (nothing here is pipelined: one per round trip)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


class NaivePresence:
    """The obvious multi-command Redis presence (no atomicity, no crash handling)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r, self.p = client, prefix

    async def connect(self, user_id: str, sid: str) -> bool:
        await self.r.hset(self.p + "sids", sid, user_id)
        added = await self.r.sadd(self.p + "user:" + user_id, sid)
        first = added and await self.r.scard(self.p + "user:" + user_id) == 1
        if first:
            await self.r.hset(self.p + "info:" + user_id, mapping={"at": time.time()})
            await self.r.zadd(self.p + "online", {user_id: 0})
        return bool(first)

    async def disconnect(self, sid: str) -> None:
        user_id = await self.r.hget(self.p + "sids", sid)
        if user_id is None:
            return
        await self.r.hdel(self.p + "sids", sid)
        await self.r.srem(self.p + "user:" + user_id, sid)
        if not await self.r.exists(self.p + "user:" + user_id):
            await self.r.delete(self.p + "info:" + user_id)
            await self.r.zrem(self.p + "online", user_id)

    async def page(self, limit: int) -> list[Any]:
        ids = await self.r.zrange(self.p + "online", "-", "+", bylex=True, offset=0, num=limit)
        return [await self.r.hgetall(self.p + "info:" + uid) for uid in ids]


async def keys_bytes(client: aioredis.Redis, prefix: str) -> tuple[int, int]:
    """(number of keys, sum of MEMORY USAGE) under ``prefix``."""
    total = count = 0
    async for key in client.scan_iter(match=prefix + "*", count=5000):
        total += await client.memory_usage(key, samples=0) or 0
        count += 1
    return count, total


async def used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def drop(client: aioredis.Redis, prefix: str) -> None:
    batch: list[str] = []
    async for key in client.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


async def pairs_per_second(connect: Any, disconnect: Any, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await connect(f"bench-user-{i % 500}", f"bench-sid-{i}")
        await disconnect(f"bench-sid-{i}")
    return n / (time.perf_counter() - start)


async def fill(connect: Any, users: int, concurrency: int = 64) -> None:
    queue = iter(range(users))

    async def worker() -> None:
        for i in queue:
            await connect(f"user-{i:07d}", f"sid-{i:07d}-abcdefgh")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def page_latency_ms(page: Any, rounds: int = 50) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await page()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3000)
    args = parser.parse_args()

    client = redis_client(args.redis, connection_class=CountingConnection, max_connections=128)
    rows: list[tuple[str, str, str, str]] = []
    try:
        # --- throughput -------------------------------------------------
        prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
        rt = PresenceStore.from_url(args.redis, prefix=prefix, redis=client)
        naive = NaivePresence(client, prefix + "naive:")
        mem = PresenceStore()
        rt_pairs = await pairs_per_second(rt.connect, rt.disconnect, args.pairs)
        naive_pairs = await pairs_per_second(naive.connect, naive.disconnect, args.pairs)
        mem_pairs = await pairs_per_second(mem.connect, mem.disconnect, args.pairs)

        # --- round trips per connect ----------------------------------
        before = CountingConnection.sent
        for i in range(100):
            await rt.connect(f"rt-{i}", f"rt-sid-{i}")
        rt_trips = (CountingConnection.sent - before) / 100
        before = CountingConnection.sent
        for i in range(100):
            await naive.connect(f"rt-{i}", f"rt-sid-{i}")
        naive_trips = (CountingConnection.sent - before) / 100
        await rt.close()
        await drop(client, prefix)

        # --- 100k users: memory and page latency -------------------------
        rt_prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
        naive_prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
        rt = PresenceStore.from_url(args.redis, prefix=rt_prefix, redis=client)
        naive = NaivePresence(client, naive_prefix)
        base_mem = await used_memory(client)
        await fill(rt.connect, args.users)
        rt_info = (await used_memory(client) - base_mem) / args.users
        _, rt_bytes = await keys_bytes(client, rt_prefix)
        base_mem = await used_memory(client)
        await fill(naive.connect, args.users)
        naive_info = (await used_memory(client) - base_mem) / args.users
        _, naive_bytes = await keys_bytes(client, naive_prefix)
        await fill(mem.connect, args.users)

        rt_page = await page_latency_ms(lambda: rt.online_users(limit=100))
        rt_mid = await page_latency_ms(
            lambda: rt.online_users(cursor=f"user-{args.users // 2:07d}", limit=100)
        )
        naive_page = await page_latency_ms(lambda: naive.page(100))
        mem_page = await page_latency_ms(lambda: mem.online_users(limit=100))
        assert (await rt.count()).users == args.users

        start = time.perf_counter()
        await rt.close()  # clean shutdown: removes all of this instance's connections
        close_s = time.perf_counter() - start
        await drop(client, rt_prefix)
        await drop(client, naive_prefix)
        await mem.close()

        rows = [
            (
                "connect+disconnect pairs/s",
                f"{rt_pairs:,.0f}",
                f"{naive_pairs:,.0f}",
                f"{mem_pairs:,.0f}",
            ),
            ("round trips per connect", f"{rt_trips:.2f}", f"{naive_trips:.2f}", "0"),
            (
                f"online_users page (100) at {args.users:,} users, ms",
                f"{rt_page:.2f}",
                f"{naive_page:.2f}",
                f"{mem_page:.3f}",
            ),
            ("  page from the middle (cursor), ms", f"{rt_mid:.2f}", "-", "-"),
            (
                "bytes/connection (MEMORY USAGE)",
                f"{rt_bytes / args.users:.0f}",
                f"{naive_bytes / args.users:.0f}",
                "-",
            ),
            (
                "bytes/connection (INFO delta; shared server, noisy)",
                f"{rt_info:.0f}",
                f"{naive_info:.0f}",
                "-",
            ),
            (f"close(): remove {args.users:,} connections, s", f"{close_s:.2f}", "-", "-"),
        ]
    finally:
        await client.aclose()

    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'rtkit redis':>12}  {'naive redis':>12}  {'rtkit memory':>12}")
    for name, a, b, c in rows:
        print(f"{name:<{width}}  {a:>12}  {b:>12}  {c:>12}")
    print(
        f"\nratios: rtkit/naive throughput {rt_pairs / naive_pairs:.2f}x, "
        f"page latency {rt_page / naive_page:.2f}x, "
        f"bytes/connection {rt_bytes / naive_bytes:.2f}x; "
        f"memory/rtkit-redis throughput {mem_pairs / rt_pairs:.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
