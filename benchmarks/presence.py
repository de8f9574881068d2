"""PresenceStore on Redis against the obvious hand-written Redis presence.

``naive``: a set of sids per user, a hash of user records and a set of online users,
one command per step (what most ports of in-process presence maps look like), without crash
purging. Figures: connect+disconnect pairs per second, round trips per connect, Redis
bytes per online connection (``MEMORY USAGE`` of every key) and ``online_users`` pages
per second with ``--users`` (default 100,000) users online, and ``close()`` time. Ids
are realistic: UUID user ids, usernames like ``grace.lopez42``, 20-character sids.

    python benchmarks/presence.py [--quick] [--rounds N] [--redis URL] [--users 100000]
        [--write-docs]

Connect/disconnect and page latency are interleaved slices; the memory figures come
from filling both stores in turn (twice, or once with ``--quick``, which also caps the
users at 10,000).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from typing import Any

import _harness as h
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

    async def connect(self, user_id: str, sid: str, username: str) -> bool:
        await self.r.hset(self.p + "sids", sid, user_id)
        added = await self.r.sadd(self.p + "user:" + user_id, sid)
        first = added and await self.r.scard(self.p + "user:" + user_id) == 1
        if first:
            info = {"at": time.time(), "username": username}
            await self.r.hset(self.p + "info:" + user_id, mapping=info)
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
    """(number of keys, sum of MEMORY USAGE) under ``prefix`` (pipelined per SCAN batch)."""
    total = count = 0
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor, match=prefix + "*", count=5000)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            total += sum(size or 0 for size in await pipe.execute())
            count += len(keys)
        if cursor == 0:
            return count, total


async def drop(client: aioredis.Redis, prefix: str) -> None:
    batch: list[str] = []
    async for key in client.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
LAST = ["smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "moore", "lee", "clark"]


def user(i: int) -> tuple[str, str, str]:
    """A realistic (user id, username, sid): a UUID, a name with digits, a Socket.IO sid.

    Deterministic in ``i`` (both sides get the same data); a sid is 20 base64url
    characters, like python-socketio's.
    """
    rng = random.Random(i)
    user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    username = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randrange(100)}"
    sid = base64.urlsafe_b64encode(rng.randbytes(15)).decode()
    return user_id, username, sid


async def fill(connect: Any, users: int, concurrency: int = 64) -> None:
    queue = iter(range(users))

    async def worker() -> None:
        for i in queue:
            user_id, username, sid = user(i)
            await connect(user_id, sid, username)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def pairs(connect: Any, disconnect: Any) -> h.Batch:
    """``n`` connect + disconnect pairs (500 users, a new sid each time)."""
    state = {"i": 0}

    async def batch(n: int) -> None:
        i = state["i"]
        for k in range(i, i + n):
            user_id, username, _ = user(k % 500)
            sid = f"{k:020d}"
            await connect(user_id, sid, username)
            await disconnect(sid)
        state["i"] = i + n

    return batch


async def main() -> None:
    parser = h.arguments(__doc__, rounds=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    rounds = h.rounds_of(args)
    users = min(args.users, 10_000) if args.quick and args.users == 100_000 else args.users
    fills = 1 if args.quick else 2
    run = h.Run("presence", args)
    client = redis_client(args.redis, connection_class=CountingConnection, max_connections=128)
    run.server("Redis", (await client.info("server"))["redis_version"])
    try:
        # --- connect + disconnect, round trips ----------------------------------
        prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
        rt = PresenceStore.from_url(args.redis, prefix=prefix, redis=client)
        naive = NaivePresence(client, prefix + "naive:")

        async def rt_connect(user_id: str, sid: str, username: str) -> None:
            await rt.connect(user_id, sid, username=username)

        figures = await h.alternate(
            {
                "rtkit": pairs(rt_connect, rt.disconnect),
                "naive": pairs(naive.connect, naive.disconnect),
            },
            rounds=rounds,
            slice_ms=max(args.slice_ms, 100.0),
        )
        labels = {"rtkit": "rtkit PresenceStore (Redis)", "naive": "naive Redis presence"}
        run.add(
            h.compare(
                "connect + disconnect", figures, "rtkit", ["naive"], unit="pairs/s", labels=labels
            )
        )
        trips = {}
        for name, connect in (("rtkit", rt_connect), ("naive", naive.connect)):
            before = CountingConnection.sent
            for i in range(100):
                user_id, username, sid = user(10_000_000 + i)
                await connect(user_id, sid, username)
            trips[name] = (CountingConnection.sent - before) / 100
        run.note(
            f"Round trips per connect: rtkit {trips['rtkit']:.2f}, naive {trips['naive']:.2f} "
            "(commands counted on the connection)."
        )
        await rt.close()
        await drop(client, prefix)

        # --- N users online: bytes per connection, page latency -------------------
        byte_figures: dict[str, list[float]] = {"rtkit": [], "naive": []}
        page_figures: dict[str, list[float]] = {"rtkit": [], "naive": []}
        closing: list[float] = []
        for round_ in range(fills):
            rt_prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
            naive_prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
            rt = PresenceStore.from_url(args.redis, prefix=rt_prefix, redis=client)
            naive = NaivePresence(client, naive_prefix)

            async def rt_fill(user_id: str, sid: str, username: str, rt: Any = rt) -> None:
                await rt.connect(user_id, sid, username=username)

            for name in h.order(["rtkit", "naive"], round_):
                if name == "rtkit":
                    await fill(rt_fill, users)
                    byte_figures[name].append((await keys_bytes(client, rt_prefix))[1] / users)
                else:
                    await fill(naive.connect, users)
                    byte_figures[name].append((await keys_bytes(client, naive_prefix))[1] / users)
            assert (await rt.count()).users == users

            async def rt_page(n: int, rt: Any = rt) -> None:
                for _ in range(n):
                    await rt.online_users(limit=100)

            async def naive_page(n: int, naive: Any = naive) -> None:
                for _ in range(n):
                    await naive.page(100)

            pages = await h.alternate(
                {"rtkit": rt_page, "naive": naive_page},
                rounds=max(3, rounds // 2),
                slice_ms=max(args.slice_ms, 100.0),
            )
            for name in pages:
                page_figures[name] += pages[name]
            started = time.perf_counter()
            await rt.close()  # clean shutdown: removes all of this instance's connections
            closing.append(time.perf_counter() - started)
            await drop(client, rt_prefix)
            await drop(client, naive_prefix)

        case = f"{users:,} users online, one connection each"
        run.add(
            [
                h.Row(
                    case,
                    "rtkit: Redis bytes per connection",
                    byte_figures["rtkit"],
                    "B",
                    goal="≤ 250 B",
                ),
                h.Row(case, "naive: Redis bytes per connection", byte_figures["naive"], "B"),
            ]
        )
        run.add(
            h.compare(
                f"online_users page of 100 at {users:,} users",
                page_figures,
                "rtkit",
                ["naive"],
                unit="pages/s",
                labels=labels,
            )
        )
        run.add([h.Row(case, f"rtkit: close() removing {users:,} connections", closing, "s")])
        run.note(
            "Bytes per connection: the sum of `MEMORY USAGE` of every key of the store, "
            "divided by the users; ids are UUIDs, usernames like `grace.lopez42`, sids 20 "
            "base64url characters. The naive baseline is the obvious port of in-process "
            "presence maps to Redis: "
            "a sid hash, a set and a hash per user and an online set, one command per step, "
            "no crash handling. Presence code is not changed by this benchmark's run."
        )
    finally:
        await client.aclose()
    run.finish("presence.md")


if __name__ == "__main__":
    h.run(main)
