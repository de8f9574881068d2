"""PresenceStore on Redis against the obvious hand-written Redis presence.

``naive``: a set of sids per user, a hash of user records and a set of online users,
one command per step (what most ports of in-process presence maps look like), without crash
purging. Figures: connect+disconnect pairs per second, round trips per connect, Redis
bytes per online connection (``MEMORY USAGE`` of every key, and per kind of key) and
``online_users`` pages per second with ``--users`` (default 100,000) users online, and
``close()`` time. Ids are realistic: UUID user ids, usernames like ``grace.lopez42``,
20-character sids.

One node against a cluster: a private redis-server and a private three-master Redis
Cluster (no replicas), both started by this script from the ``redis-server`` binary
(``tests/rtkit_topology.py``), take turns at connect+disconnect pairs, one at a time
and 64 at once; then ``--cluster-users`` (default 20,000) users connect to the
cluster and each master's keys (``DBSIZE``) and commands (``INFO commandstats``, after
``CONFIG RESETSTAT``) are compared with an even share.

    python benchmarks/presence.py [--quick] [--rounds N] [--redis URL] [--users 100000]
        [--cluster-users 20000] [--no-cluster] [--write-docs]

Connect/disconnect and page latency are interleaved slices; the memory figures come
from filling both stores in turn (twice, or once with ``--quick``, which also caps the
users at 10,000).
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
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


def _kind(key: str) -> str:
    """A key's kind: its name without the hash tag and the instance id (``:u``, ...)."""
    kind = re.sub(r"^\{[^}]*\}", "", key)
    kind = re.sub(r":i:[^:]+:\d+$", ":i:<instance>:<n>", kind)
    return re.sub(r":m:[^:]+$", ":m:<instance>", kind)


async def keys_bytes(
    client: aioredis.Redis, prefix: str, kinds: dict[str, int] | None = None
) -> tuple[int, int]:
    """(number of keys, sum of MEMORY USAGE) under ``prefix`` (both ``<prefix>...`` and
    ``{<prefix>...}...`` keys; pipelined per SCAN batch); ``kinds`` gets bytes per kind."""
    total = count = 0
    for match in (prefix + "*", "{" + prefix + "*"):
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=match, count=5000)
            if keys:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.memory_usage(key, samples=0)
                sizes = [size or 0 for size in await pipe.execute()]
                total += sum(sizes)
                count += len(keys)
                if kinds is not None:
                    for key, size in zip(keys, sizes, strict=True):
                        kinds[_kind(key)] = kinds.get(_kind(key), 0) + size
            if cursor == 0:
                break
    return count, total


async def drop(client: aioredis.Redis, prefix: str) -> None:
    await h.drop_keys(client, prefix + "*", "{" + prefix + "*")


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


def pairs(connect: Any, disconnect: Any, at_once: int = 1) -> h.Batch:
    """``n`` connect + disconnect pairs (500 users, a new sid each time), ``at_once``
    pairs in flight."""
    state = {"i": 0}

    async def one(k: int) -> None:
        user_id, username, _ = user(k % 500)
        sid = f"{k:020d}"
        await connect(user_id, sid, username)
        await disconnect(sid)

    async def batch(n: int) -> None:
        i = state["i"]
        state["i"] = i + n
        if at_once == 1:
            for k in range(i, i + n):
                await one(k)
            return
        queue = iter(range(i, i + n))

        async def worker() -> None:
            for k in queue:
                await one(k)

        await asyncio.gather(*(worker() for _ in range(at_once)))

    return batch


def _evenness(per_master: list[float]) -> list[float]:
    """Each master's figure over the even share (1.00 = exactly even)."""
    mean = statistics.mean(per_master)
    return [n / mean for n in per_master] if mean else []


async def one_node_vs_cluster(run: h.Run, args: Any, rounds: int) -> None:
    """Connect/disconnect on a private node and on a private 3-master cluster; the
    keys and commands each master gets."""
    sys.path.insert(0, str(h.ROOT / "tests"))
    from rtkit_topology import PrivateCluster, RedisNode

    binary = shutil.which("redis-server") or "redis-server"
    single = RedisNode(binary, Path(tempfile.mkdtemp(prefix="rtkit-bench-")), [])
    cluster = PrivateCluster(masters=3, replicas=0)
    single.start()
    stores: list[PresenceStore] = []
    try:
        cluster.start()
        prefix = f"rtb-{uuid.uuid4().hex[:6]}:"
        one = PresenceStore.from_url(f"redis://{single.address}", prefix=prefix)
        many = PresenceStore.from_url(cluster.url, prefix=prefix)
        stores += [one, many]
        await one.start()
        await many.start()

        def connect_of(store: PresenceStore) -> Any:
            async def connect(user_id: str, sid: str, username: str) -> None:
                await store.connect(user_id, sid, username=username)

            return connect

        labels = {"cluster": "3-master cluster", "node": "one node"}
        for at_once in (1, 64):
            figures = await h.alternate(
                {
                    "cluster": pairs(connect_of(many), many.disconnect, at_once),
                    "node": pairs(connect_of(one), one.disconnect, at_once),
                },
                rounds=rounds,
                slice_ms=max(args.slice_ms, 200.0),
            )
            case = "connect + disconnect, " + ("one at a time" if at_once == 1 else "64 at once")
            run.add(h.compare(case, figures, "cluster", ["node"], unit="pairs/s", labels=labels))

        masters = cluster.masters()
        for node in masters:
            node.cli("config", "resetstat")
        users = min(args.cluster_users, 3_000) if args.quick else args.cluster_users
        await fill(connect_of(many), users)
        for k in range(users // 10):  # and some churn
            user_id, username, _ = user(k)
            await many.connect(user_id, f"churn-{k}", username=username)
            await many.disconnect(f"churn-{k}")
        await many.purge_expired()  # one heartbeat: every bucket, pipelined per master
        keys, calls = [], []
        for node in masters:
            keys.append(float(node.cli("dbsize").strip()))
            stats = node.cli("info", "commandstats")
            calls.append(float(sum(int(n) for n in re.findall(r"calls=(\d+)", stats))))
        case = f"{users:,} users on the 3-master cluster, per master"
        run.add(
            [
                h.Row(case, "keys (DBSIZE) / even share", _evenness(keys), "x", goal="0.8-1.2"),
                h.Row(case, "commands / even share", _evenness(calls), "x", goal="0.8-1.2"),
            ]
        )
        run.note(
            f"Per master, {users:,} users online on the private cluster: keys "
            + ", ".join(f"{n:,.0f}" for n in keys)
            + "; commands (fill, churn, a heartbeat) "
            + ", ".join(f"{n:,.0f}" for n in calls)
            + ". Presence keeps 32 buckets, whose hash tags are chosen to cover the slot "
            "space evenly (10 or 11 buckets per master here)."
        )
    finally:
        for store in stores:
            await store.close()
        cluster.stop()
        single.stop()


async def main() -> None:
    parser = h.arguments(__doc__, rounds=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cluster-users", type=int, default=20_000)
    parser.add_argument("--no-cluster", action="store_true", help="skip one node vs cluster")
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

        # --- one node vs a cluster ----------------------------------------------------
        if not args.no_cluster:
            await one_node_vs_cluster(run, args, rounds)

        # --- N users online: bytes per connection, page latency -------------------
        byte_figures: dict[str, list[float]] = {"rtkit": [], "naive": []}
        kinds: dict[str, int] = {}
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
                    kinds.clear()
                    found = await keys_bytes(client, rt_prefix, kinds)
                    byte_figures[name].append(found[1] / users)
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
            "rtkit's bytes per connection by kind of key (last fill): "
            + ", ".join(f"`{kind}` {size / users:.1f} B" for kind, size in sorted(kinds.items()))
            + ". `:u` is each bucket's sorted set of online users (one member per user: id, "
            "first connection time, username, sids), `:i:<instance>:<n>` the instance's "
            "index of its connections (sid -> user id, a UUID packed in 19 bytes; small listpack "
            "hashes)."
        )
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
